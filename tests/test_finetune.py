"""freeze_backbone=True, then unfreeze_backbone() for stage two."""

import keras
import numpy as np
import pytest
from conftest import tiny_inputs
from helpers import build_tiny

from mbm_keras import find_backbones, unfreeze_backbone

ENCODERS = {"image": "mobilenet_v3_small", "tabular": "mlp"}


def _weights(layer):
    return [w.numpy().copy() for w in layer.weights]


def test_frozen_backbone_is_fixed_and_in_inference_mode():
    model = build_tiny(ENCODERS, weights=None, freeze_backbone=True)
    backbone = model.get_layer("image_encoder").get_layer("MobileNetV3Small")
    assert find_backbones(model) == [backbone]
    assert not backbone.trainable and backbone.trainable_weights == []
    x = tiny_inputs(ENCODERS, batch=8)
    # BatchNorm in inference mode and dropout=0: training=True changes nothing.
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=1e-5, atol=1e-6)
    before_backbone, before_head = _weights(backbone), _weights(model.get_layer("predictions"))
    model.fit(x, np.arange(8) % 2, epochs=2, verbose=0)
    for a, b in zip(before_backbone, _weights(backbone)):
        np.testing.assert_array_equal(a, b)  # moving statistics included
    assert any(not np.array_equal(a, b) for a, b in zip(before_head, _weights(model.get_layer("predictions"))))


def test_unfreeze_top_layers_keeps_batchnorm_frozen():
    model = build_tiny(ENCODERS, weights=None, freeze_backbone=True)
    backbone = find_backbones(model)[0]
    n = unfreeze_backbone(model, num_layers=10, learning_rate=1e-5)
    top, bottom = backbone.layers[-10:], backbone.layers[:-10]
    assert n == sum(1 for layer in top if layer.weights and not isinstance(layer, keras.layers.BatchNormalization))
    assert n > 0
    assert all(not layer.trainable for layer in bottom)
    assert all(not layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-5)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)

    trainable_top = [layer for layer in top if layer.trainable and layer.weights]
    frozen_conv = [layer for layer in bottom if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    before_top, before_bottom = _weights(trainable_top[0]), _weights(frozen_conv[0])
    x = tiny_inputs(ENCODERS, batch=8)
    model.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before_top, _weights(trainable_top[0])))
    for a, b in zip(before_bottom, _weights(frozen_conv[0])):
        np.testing.assert_array_equal(a, b)


def test_unfreeze_survives_a_keras_round_trip(tmp_path):
    model = build_tiny(ENCODERS, freeze_backbone=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert not find_backbones(reloaded)[0].trainable
    assert unfreeze_backbone(reloaded) > 0
    assert find_backbones(reloaded)[0].trainable


def test_unfreeze_without_backbone_is_an_error():
    with pytest.raises(ValueError, match="no backbone to unfreeze"):
        unfreeze_backbone(build_tiny({"text": "cnn", "tabular": "mlp"}))
    with pytest.raises(ValueError, match="num_layers=0"):
        unfreeze_backbone(build_tiny(ENCODERS), num_layers=0)
