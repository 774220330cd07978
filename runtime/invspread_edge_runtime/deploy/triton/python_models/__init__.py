"""Triton Python-backend models that `deploy.triton` copies into a repository as `1/model.py`
(`preprocess`: image bytes → the model's input; `embedding`: ONNX Runtime on the CPU). They run
inside Triton, where `triton_python_backend_utils` exists; importing them elsewhere does nothing."""
