"""Deployment: ONNX export of the detector's inference (onnx.py)."""
