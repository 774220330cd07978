"""Native TensorRT: build engines from exported ONNX files on the device, cache and load them.

    from invspread_edge_runtime.metadata import read_model_meta
    from invspread_edge_runtime.tensorrt.build import build_engine
    from invspread_edge_runtime.verify.engines import probe_plan_check

    onnx = "model.int8.onnx"
    check = probe_plan_check(onnx, read_model_meta(onnx))  # the probe set beside it judges the engine
    info = build_engine(onnx, "model.int8.engine", precision="int8", max_batch=64, check=check)

One job per module: `api.py` (the bindings, imported on first use), `cuda.py` (cuda-python),
`cache.py` (engine keys and sidecars), `build.py` (ONNX → plan), `load.py` (plan → execution context).
Nothing here imports `tensorrt` or cuda-python until a function needs them.
"""
