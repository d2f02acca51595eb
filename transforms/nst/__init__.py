"""Gatys neural style transfer in keras.ops (TensorFlow, JAX or torch backend).

settings: what a run is asked for, and its validation (Keras-free); inputs: decoded photos ->
NST's images (Keras-free); pyramid: the sizes a run optimises at (Keras-free); optimize: the entry
points and the step loop; optimizers: Adam and L-BFGS; losses: Gram, style, content and TV losses;
compiled: the per-extractor cache of compiled functions; backends: the per-backend gradient,
compilation and "auto" settings; extractors: frozen VGG19 / MobileNetV3 and their weights;
buckets: shape buckets; controls: seeds, inits, blends, colours and the memory budget.
Never imports apache_beam: numpy in, numpy out.
"""
