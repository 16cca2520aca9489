"""Training, evaluation and ONNX export of the hbscreen models (needs the `train` extra: torch)."""
