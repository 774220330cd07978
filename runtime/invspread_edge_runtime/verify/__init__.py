"""The probe check: is what runs here the model that was exported?

One job per module:
- `probes.py`: the probe set an export writes beside its models (images, FP32 embeddings,
  thresholds per precision), reading and validating it;
- `backend.py`: one backend judged against the probe set (`verify_backend`, `VerifyResult`,
  `require_pass`), and each `invedge bench` row's verdict;
- `engines.py`: `PROBE_CHECK`, the check handed to the backends so that an engine TensorRT builds
  on this device is judged before it is written, cached or used;
- `export.py`: every artifact of an export folder on one backend (`invedge verify`), and the
  export's own check on ort-cpu.
"""
