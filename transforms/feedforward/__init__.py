"""Fast neural style transfer (Johnson et al. 2016, instance normalisation): one network per
style, trained on the seed's NST loss, then one forward pass per photo. Keras 3 layers and
keras.ops (TensorFlow or JAX backend); numpy in, numpy out; never imports apache_beam.

settings: FFSettings (no Keras); network: build_network, apply, save_network, load_network;
training: train; evaluation: evaluate_heldout, gate_failures (the panel itself: transforms.quality).
bench/FF_RESEARCH.md: the measurements.
"""
