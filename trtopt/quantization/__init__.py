"""INT8 calibration (histograms, calibrators, scale tables, TensorRT caches), Q/DQ insertion, FP16.

Submodules are imported where needed; nothing here imports torch or ONNX Runtime, so importing a
scale table stays cheap for serving code.
"""
