"""Gatys neural style transfer in keras.ops (TensorFlow, JAX or torch backend).

extractors: frozen VGG19 / MobileNetV3 feature extractors and their weights;
losses: Gram, style, content and total-variation losses; optimize: the Adam loop.
Never imports apache_beam: numpy in, numpy out.
"""
