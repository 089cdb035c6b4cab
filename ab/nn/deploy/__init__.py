"""Deployment: PyTorch -> ONNX -> TFLite export, fidelity against PyTorch, latency."""
