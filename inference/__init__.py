"""Image intake, quality gate, ONNX pipeline, heatmap, advice, job queue and worker.

Nothing in this package imports torch: workers ship with onnxruntime, opencv and numpy.
"""
