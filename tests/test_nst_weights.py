"""Where extractor weights come from, and the driver preflight's failure message (no network)."""
import keras
import numpy as np
import pytest

from pipeline.io.weights import WeightsUnavailable, ensure_weights_available, local_weights
from transforms.nst import extractors
from transforms.nst.extractors import load_extractor


def _fail_download(*args, **kwargs):
    raise ConnectionError("network unreachable")


def test_missing_imagenet_weights_message_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", _fail_download)
    with pytest.raises(WeightsUnavailable) as raised:
        ensure_weights_available("vgg19", "imagenet")
    message = str(raised.value)
    print(message)
    assert "\n" not in message
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "models") in message
    assert "--weights PATH" in message
    assert "../shared" not in message  # a helper script users do not have
    assert isinstance(raised.value, RuntimeError)


def test_missing_mobilenet_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", _fail_download)
    with pytest.raises(WeightsUnavailable, match="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"):
        ensure_weights_available("mobilenet_v3_large", "imagenet")


def test_preflight_asks_keras_for_its_own_file_and_hash(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", lambda *args, **kwargs: calls.append((args, kwargs)))
    ensure_weights_available("vgg19", "imagenet")
    (args, kwargs), = calls
    assert args[0] == "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert kwargs["file_hash"] == "253f8cb515780f3b799900260a226db6"
    assert kwargs["cache_dir"] == str(tmp_path)


def test_preflight_for_paths_and_random(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", _fail_download)
    ensure_weights_available("vgg19", "random")
    existing = tmp_path / "w.weights.h5"
    existing.write_bytes(b"")
    ensure_weights_available("vgg19", str(existing))
    ensure_weights_available("vgg19", f"file://{existing}")
    with pytest.raises(WeightsUnavailable, match="not found"):
        ensure_weights_available("vgg19", str(tmp_path / "absent.h5"))


def test_unknown_names_are_value_errors():
    with pytest.raises(ValueError, match="unknown extractor"):
        load_extractor("resnet", "random")
    with pytest.raises(ValueError, match="weights must be"):
        ensure_weights_available("vgg19", "weights.pkl")
    with pytest.raises(ValueError, match="weights must be"):
        load_extractor("vgg19", "weights.pkl")


@pytest.mark.slow
def test_random_weights_are_reproducible():
    images = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    first, second = (load_extractor("mobilenet_v3_large", "random") for _ in range(2))
    for a, b in zip(first.model(images), second.model(images)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.slow
def test_load_weights_through_fsspec_uri(tmp_path):
    """A full-network weights file at an fsspec URI (here memory://) loads into the extractor."""
    import fsspec

    spec = extractors.EXTRACTORS["mobilenet_v3_large"]
    keras.utils.set_random_seed(123)  # differs from load_extractor's own random init
    base = spec.build(weights=None)
    local = tmp_path / "mnv3.weights.h5"
    base.save_weights(local)
    with fsspec.open("memory://toonbeam/mnv3.weights.h5", "wb") as out:
        out.write(local.read_bytes())
    loaded = load_extractor("mobilenet_v3_large", local_weights("memory://toonbeam/mnv3.weights.h5"))
    expected = extractors.FeatureExtractor(spec, base)
    images = np.random.default_rng(1).random((1, 32, 32, 3), dtype=np.float32)
    for a, b in zip(expected.model(images), loaded.model(images)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6)


def test_keras_free_extractor_names_match_the_extractors():
    from transforms.nst.settings import EXTRACTOR_NAMES

    assert EXTRACTOR_NAMES == tuple(sorted(extractors.EXTRACTORS))
