"""ONNX export, parity checks, quantization, the onnxruntime scorer and the model registry."""
