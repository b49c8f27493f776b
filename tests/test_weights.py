"""weights=: a file path is really loaded; "imagenet" offline fails fast and says what to do."""

import os
import time

import keras
import numpy as np
import pytest
from conftest import tiny_inputs
from helpers import build_tiny

from mbm_keras import PretrainedWeightsUnavailable, build_fusion_model

STANDALONE = {
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, lambda x: x),  # preprocesses inside
}


# ResNet50 (three full-size backbones built and run) is slow; MobileNetV3Small takes the same path in test-fast.
@pytest.mark.parametrize("name", [pytest.param("resnet50", marks=pytest.mark.slow), "mobilenet_v3_small"])
def test_weights_file_is_loaded(name, tmp_path):
    app, preprocess = STANDALONE[name]
    keras.utils.set_random_seed(123)
    reference = app(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = os.path.join(tmp_path, f"{name}.weights.h5")
    reference.save_weights(path)

    keras.utils.set_random_seed(0)  # a different random init, so equality proves loading
    model = build_fusion_model(image=name, text="cnn", image_shape=(32, 32, 3), text_length=8, vocab_size=50, weights=path)
    encoder = model.get_layer("image_encoder")
    images = tiny_inputs(["image"])["image"]
    # Eager calls in inference mode (predict would trace a tf.function for each of the three models).
    expected = keras.ops.convert_to_numpy(reference(preprocess(images.copy()), training=False))
    # Random MobileNetV3 features are ~1e-11: tolerances relative to their scale.
    atol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(images, training=False)), expected, rtol=1e-4, atol=atol)

    unloaded = build_fusion_model(image=name, text="cnn", image_shape=(32, 32, 3), text_length=8, vocab_size=50, weights=None)
    got = keras.ops.convert_to_numpy(unloaded.get_layer("image_encoder")(images, training=False))
    assert not np.allclose(got, expected, rtol=1e-2, atol=atol)


def test_text_encoder_weights_file(tmp_path):
    first = build_tiny({"text": "bilstm"})
    path = os.path.join(tmp_path, "text.weights.h5")
    first.get_layer("text_encoder").save_weights(path)
    keras.utils.set_random_seed(7)
    second = build_tiny({"text": "bilstm"}, text_kwargs={"weights": path})
    tokens = tiny_inputs(["text"])["text"]
    np.testing.assert_array_equal(
        second.get_layer("text_encoder").predict(tokens, verbose=0),
        first.get_layer("text_encoder").predict(tokens, verbose=0),
    )


def test_wrong_weights_file_names_file_and_encoder(tmp_path):
    path = os.path.join(tmp_path, "text.weights.h5")
    build_tiny({"text": "gru"}).get_layer("text_encoder").save_weights(path)
    with pytest.raises(ValueError, match=r"text.weights.h5 into encoder 'lstm'"):
        build_tiny({"text": "lstm"}, text_kwargs={"weights": path})


def test_missing_weights_file(tmp_path):
    missing = os.path.join(tmp_path, "nope.h5")
    with pytest.raises(FileNotFoundError, match=r"encoder 'resnet50' not found: .*nope.h5"):
        build_tiny({"image": "resnet50"}, weights=missing)


def test_imagenet_for_an_encoder_without_pretrained_weights():
    with pytest.raises(ValueError, match=r"Encoder 'small_cnn' has no ImageNet weights"):
        build_tiny({"image": "small_cnn"}, weights="imagenet")


def test_imagenet_offline_fails_fast_and_says_where_to_put_the_file(tmp_path, monkeypatch):
    # An empty Keras cache and a proxy on a closed local port: the real
    # download code runs and fails as it does on a machine without internet.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    start = time.time()
    with pytest.raises(PretrainedWeightsUnavailable) as e:
        build_fusion_model(image="resnet50", text="bilstm", image_shape=(32, 32, 3), text_length=8, vocab_size=50, weights="imagenet")
    assert time.time() - start < 30
    msg = str(e.value)
    target = os.path.join(str(tmp_path), "models", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert target in msg and "weights='/path/to/" in msg
