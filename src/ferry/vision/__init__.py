"""Image classification: a small PyTorch CNN trained on images, exported to one ONNX graph.

The lab side only: torch is imported here and nowhere a server loads. Images are decoded,
resized and normalised by ``ferry.serving.images`` in training as in serving, and the bundle's
manifest declares that preprocessing so a server reproduces it with Pillow alone.
"""
