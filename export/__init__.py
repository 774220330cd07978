"""invspread-edge export: checkpoint → verified ONNX, INT8 (QDQ), FP16 and TensorRT engines."""
