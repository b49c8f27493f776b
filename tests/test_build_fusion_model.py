"""build_fusion_model(): the documented call, heads, arguments, errors."""

import keras
import numpy as np
import pytest
from conftest import TINY, tiny_inputs
from helpers import all_layers, build_tiny, run_model_checks

from mbm_keras import build_fusion_model


def test_the_documented_call_builds(tmp_path):
    # The issue's example verbatim, with weights=None (offline).
    model = build_fusion_model(image="resnet50", text="bilstm", fusion="concat", num_classes=10,
                               image_shape=(224, 224, 3), text_length=64, vocab_size=20000,
                               weights=None, freeze_backbone=True)
    assert isinstance(model, keras.Model) and model.compiled
    assert set(model.input.keys()) == {"image", "text"}
    assert model.input["image"].shape == (None, 224, 224, 3)
    assert model.input["text"].shape == (None, 64) and model.input["text"].dtype == "int32"
    assert model.output.shape == (None, 10)
    names = [layer.name for layer in model.layers]
    assert names[-2:] == ["fusion", "predictions"]
    assert max(names.index("image_encoder"), names.index("text_encoder")) < names.index("fusion")
    assert not model.get_layer("image_encoder").get_layer("resnet50").trainable
    assert model.get_layer("text_encoder").trainable


def test_all_four_modalities_and_dropout(tmp_path):
    model = build_tiny({"image": "small_cnn", "text": "lstm", "audio": "logmel_lstm", "tabular": "mlp"}, dropout=0.3, num_classes=3)
    assert set(model.input.keys()) == {"image", "text", "audio", "tabular"}
    assert {f"{m}_dropout" for m in model.input} <= {layer.name for layer in model.layers}
    out = model.predict(tiny_inputs(model.input.keys()), verbose=0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_sigmoid_head_multilabel(tmp_path):
    model = build_tiny({"image": "small_cnn", "tabular": "mlp"}, head="sigmoid", num_classes=5)
    inputs = tiny_inputs(["image", "tabular"], batch=8)
    labels = (np.random.default_rng(0).random((8, 5)) > 0.5).astype("float32")
    out = model.predict(inputs, verbose=0)
    assert np.all((out > 0) & (out < 1)) and not np.allclose(out.sum(axis=1), 1.0)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    run_model_checks(model, inputs, labels, tmp_path, num_classes=5)


def test_linear_head_regression(tmp_path):
    model = build_tiny({"text": "gru", "tabular": "mlp"}, head="linear", num_classes=2, fusion="gated")
    inputs = tiny_inputs(["text", "tabular"], batch=8)
    targets = np.random.default_rng(0).normal(10, 5, (8, 2)).astype("float32")
    assert isinstance(model.loss, keras.losses.MeanSquaredError)
    assert model.get_layer("predictions").activation is keras.activations.linear
    run_model_checks(model, inputs, targets, tmp_path, num_classes=2)


def test_learns_a_signal():
    # Accuracy well above chance on data with a signal in the tabular input only.
    rng = np.random.default_rng(0)
    x = {"image": rng.uniform(0, 255, (256, 32, 32, 3)).astype("float32"),
         "tabular": rng.normal(size=(256, 5)).astype("float32")}
    y = (x["tabular"][:, 0] + x["tabular"][:, 1] > 0).astype("int32")
    model = build_tiny({"image": "small_cnn", "tabular": "mlp"}, num_classes=2, learning_rate=3e-3)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    _, acc = model.evaluate(x, y, verbose=0)
    assert acc > 0.85


def test_no_lambda_layers_anywhere():
    model = build_tiny({"image": "resnet50", "text": "bilstm", "audio": "logmel_cnn", "tabular": "mlp"}, fusion="attention")
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in all_layers(model))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image="small_cnn", image_shape=(32, 32)), r"image_shape must be \(height, width, channels\). Received: image_shape=\(32, 32\)"),
        (dict(text="cnn", text_length=0), r"text_length must be an int >= 1. Received: text_length=0"),
        (dict(text="cnn", vocab_size=1), r"vocab_size must be an int >= 2. Received: vocab_size=1"),
        (dict(audio="logmel_cnn", sample_rate=8000.5), r"sample_rate must be an int >= 1. Received: sample_rate=8000.5"),
        (dict(tabular="mlp"), r"tabular= needs tabular_dim.*tabular_dim=None"),
        (dict(text="cnn", weights="imagenet"), r"weights= sets the image encoder's weights.*weights='imagenet'"),
        (dict(image="small_cnn", image_shape=(32, 32, 3), dropout=1.5), r"dropout must be in \[0, 1\). Received: dropout=1.5"),
        (dict(image="small_cnn", image_shape=(32, 32, 3), num_classes=1), r"num_classes >= 2. Received: num_classes=1"),
        (dict(), r"at least one of image=, text=, audio=, tabular="),
        (dict(text="cnn", freeze_backbone=True), r"freeze_backbone=True, but the encoders \['cnn'\] have no pretrained backbone"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_fusion_model(**kwargs)


def test_wrong_input_shape_names_the_input():
    model = build_tiny({"image": "small_cnn", "text": "cnn"})
    bad = tiny_inputs(["image", "text"])
    bad["image"] = np.zeros((4, 64, 64, 3), "float32")
    with pytest.raises(ValueError, match=r"name 'image'.*expected shape=\(None, 32, 32, 3\), found shape=\(4, 64, 64, 3\)"):
        model.predict(bad, verbose=0)
    bad = tiny_inputs(["image", "text"])
    bad["text"] = np.zeros((4, 9), "int32")
    with pytest.raises(ValueError, match=r"name 'text'.*expected shape=\(None, 8\), found shape=\(4, 9\)"):
        model(bad)


def test_missing_input_names_the_input():
    model = build_tiny({"image": "small_cnn", "text": "cnn"})
    with pytest.raises((ValueError, KeyError), match="text"):
        model.predict(tiny_inputs(["image"]), verbose=0)


def test_tiny_shapes_are_those_of_the_issue():
    assert TINY["image_shape"] == (32, 32, 3) and TINY["text_length"] == 8 and TINY["vocab_size"] == 50


def test_a_spec_of_feature_and_option_objects_builds_what_the_keywords_build():
    import dataclasses

    from mbm_keras import (CompileOptions, EncoderOptions, Feature, FusionModelSpec, FusionOptions, HeadOptions,
                           InputOptions)

    keywords = dict(image="small_cnn", text="cnn", fusion="gated", fusion_kwargs={"units": 16}, num_classes=3,
                    image_shape=TINY["image_shape"], text_length=TINY["text_length"], vocab_size=TINY["vocab_size"],
                    dropout=0.1, missing_modalities=True, learning_rate=0.01)
    spec = FusionModelSpec(
        features={"image": Feature("image", "small_cnn"), "text": Feature("text", "cnn")},
        fusion=FusionOptions("gated", {"units": 16}), head=HeadOptions("softmax", 3),
        inputs=InputOptions(image_shape=TINY["image_shape"], text_length=TINY["text_length"],
                            vocab_size=TINY["vocab_size"]),
        encoders=EncoderOptions(dropout=0.1, missing_modalities=True), compile=CompileOptions(0.01))
    inputs = tiny_inputs(["image", "text"], batch=3)
    inputs.update(image_mask=np.ones((3, 1), "float32"), text_mask=np.array([[1], [0], [1]], "float32"))
    models = []
    for build in (lambda: build_fusion_model(**keywords), lambda: build_fusion_model(spec=spec),
                  lambda: build_fusion_model(**spec.to_kwargs())):
        keras.utils.set_random_seed(3)
        models.append(build())
    a, b, c = models
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers] == [layer.name for layer in c.layers]
    assert a.count_params() == b.count_params() == c.count_params()
    assert float(keras.ops.convert_to_numpy(b.optimizer.learning_rate)) == pytest.approx(0.01)
    np.testing.assert_allclose(a.predict(inputs, verbose=0), b.predict(inputs, verbose=0), atol=1e-6)
    np.testing.assert_allclose(b.predict(inputs, verbose=0), c.predict(inputs, verbose=0), atol=1e-6)
    # A spec is a value: another fusion is one replace away; compile=None leaves the model uncompiled.
    other = build_fusion_model(spec=dataclasses.replace(spec, fusion=FusionOptions("concat"), compile=None))
    assert other.get_layer("fusion").__class__.__name__ == "ConcatFusion" and not other.compiled


def test_a_spec_refuses_other_arguments_and_wrong_parts():
    from mbm_keras import Feature, FusionModelSpec, HeadOptions

    spec = FusionModelSpec(features={"image": Feature("image", "small_cnn")})
    with pytest.raises(TypeError, match="these arguments were given too: num_classes"):
        build_fusion_model(spec=spec, num_classes=4)
    with pytest.raises(TypeError, match="these arguments were given too: timeseries"):
        build_fusion_model(spec=spec, timeseries="series_gru")
    with pytest.raises(TypeError, match=r"FusionModelSpec.head must be a HeadOptions. Received: 'sigmoid'"):
        FusionModelSpec(features={"image": Feature("image", "small_cnn")}, head="sigmoid")
    with pytest.raises(TypeError, match=r"features\['x'\] must be a Feature or \(modality, encoder\)"):
        FusionModelSpec(features={"x": "small_cnn"})
    with pytest.raises(ValueError, match=r"features\['image'\] has unknown key\(s\) \['colour'\]"):
        build_fusion_model(spec=FusionModelSpec(features={"image": Feature("image", "small_cnn",
                                                                             options={"colour": 1})}))
    with pytest.raises(ValueError, match="num_classes"):
        build_fusion_model(spec=FusionModelSpec(features={"image": Feature("image", "small_cnn")},
                                                head=HeadOptions("softmax", 0)))


def test_retrieval_towers_take_feature_specs():
    from mbm_keras import Feature
    from mbm_keras.retrieval import build_retrieval_model

    model = build_retrieval_model(
        {"caption": Feature("text", "cnn", options={"text_length": 8, "vocab_size": 50})},
        {"photo": Feature("image", "small_cnn", options={"image_shape": (32, 32, 3)})}, embedding_dim=8)
    assert sorted(model.input) == ["caption", "photo"]
    assert model.get_layer("query_tower").input["caption"].shape == (None, 8)
    assert model.get_layer("candidate_tower").input["photo"].shape == (None, 32, 32, 3)
