"""Export to other runtimes (ONNX)."""
