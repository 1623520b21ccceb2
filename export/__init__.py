"""The build side of a model: torch → ONNX export, the parity gate, quantised variants.

The torch-free runtime that serves the ONNX file (scorer, registry, hot reload) lives in
`memberpulse.streams.serving`.
"""
