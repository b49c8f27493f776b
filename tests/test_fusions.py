"""Every registered fusion, for 2 and 4 modalities, plus the math of each."""

import keras
import numpy as np
import pytest
from conftest import tiny_inputs
from helpers import build_tiny, run_model_checks

from mbm_keras import create_fusion, list_encoders, list_fusions

SMALL = {"image": "small_cnn", "text": "cnn", "audio": "logmel_cnn", "tabular": "mlp"}


def test_fusion_zoo():
    assert set(list_fusions()) >= {"concat", "gated", "attention", "low_rank_tensor", "late", "transformer", "cross_attention"}


# Four modalities in test-fast; two (each fusion's smallest case, the same code) in make test.
@pytest.mark.parametrize("modalities", [pytest.param(("image", "text"), marks=pytest.mark.slow),
                                        ("image", "text", "audio", "tabular")], ids=["2mod", "4mod"])
@pytest.mark.parametrize("fusion", list_fusions())
def test_fusion_in_model(fusion, modalities, tmp_path):
    model = build_tiny({m: SMALL[m] for m in modalities}, fusion=fusion, num_classes=4, fusion_kwargs={"units": 16} if fusion != "late" else None)
    inputs = tiny_inputs(modalities, batch=8)
    run_model_checks(model, inputs, np.arange(8) % 4, tmp_path, num_classes=4)


def _features(dims=(6, 3, 5), batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return {f"m{i}": rng.normal(size=(batch, d)).astype("float32") for i, d in enumerate(dims)}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_concat_is_the_seed_formula():
    feats = _features()
    layer = create_fusion("concat", units=7, activation=None)
    out = _np(layer(feats))
    kernel, bias = (_np(w) for w in layer.weights)
    expected = np.concatenate([feats[k] for k in sorted(feats)], axis=-1) @ kernel + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_gated_starts_as_an_average():
    feats = _features()
    layer = create_fusion("gated", units=7)
    out = _np(layer(feats))
    hidden = [np.tanh(feats[m] @ _np(k) + _np(b)) for m, k, b in zip(layer.modalities, layer.kernels, layer.biases)]
    np.testing.assert_allclose(out, np.mean(hidden, axis=0), rtol=1e-5, atol=1e-6)


def test_attention_weights_are_a_distribution_per_example():
    feats = _features()
    layer = create_fusion("attention", units=7)
    out = _np(layer(feats))
    weights, hidden = layer.modality_weights([feats[m] for m in layer.modalities])
    weights, hidden = _np(weights), _np(hidden)
    assert weights.shape == (4, 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, np.einsum("bn,bnu->bu", weights, hidden), rtol=1e-5, atol=1e-6)


def test_low_rank_tensor_equals_the_full_tensor_product():
    # Liu et al. 2018: the rank-R factorization computes W · (z_1 ⊗ z_2 ⊗ ...)
    # with z_m = [x_m; 1], where W = sum_r w_r ⊗_m W_m^(r).
    feats = _features(dims=(2, 3), batch=3)
    layer = create_fusion("low_rank_tensor", units=4, rank=3)
    out = _np(layer(feats))
    z = [np.concatenate([feats[m], np.ones((3, 1), "float32")], axis=1) for m in layer.modalities]
    f0, f1 = (_np(f) for f in layer.factors)
    w = _np(layer.rank_weights).reshape(-1)
    full = np.einsum("r,rau,rbu->abu", w, f0, f1)  # the full (3, 4, units) weight tensor
    expected = np.einsum("na,nb,abu->nu", z[0], z[1], full) + _np(layer.bias)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_late_averages_per_modality_logits():
    feats = _features()
    layer = create_fusion("late", units=5)
    out = _np(layer(feats))
    logits = [feats[m] @ _np(k) + _np(b) for m, k, b in zip(layer.modalities, layer.kernels, layer.biases)]
    np.testing.assert_allclose(out, np.mean(logits, axis=0), rtol=1e-5, atol=1e-6)


def test_late_fusion_outputs_one_logit_per_class():
    model = build_tiny({"image": "small_cnn", "text": "cnn"}, fusion="late", num_classes=6)
    assert model.get_layer("fusion").output.shape == (None, 6)
    assert isinstance(model.get_layer("predictions"), keras.layers.Activation)
    with pytest.raises(ValueError, match="num_classes=6"):
        build_tiny({"image": "small_cnn", "text": "cnn"}, fusion="late", num_classes=6, fusion_kwargs={"units": 3})


def test_fusion_rejects_unpooled_features():
    layer = create_fusion("concat")
    with pytest.raises(ValueError, match=r"pooled features.*m0"):
        layer({"m0": np.zeros((2, 3, 4), "float32"), "m1": np.zeros((2, 4), "float32")})


def test_bad_fusion_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"units=0"):
        create_fusion("gated", units=0)
    with pytest.raises(ValueError, match=r"rank=-1"):
        create_fusion("low_rank_tensor", rank=-1)
    with pytest.raises(TypeError, match=r"Fusion 'concat'.*fusion_kwargs"):
        create_fusion("concat", bogus=1)


# === Sequence features and sequence fusions ===

HEAVY_IMAGE = {"resnet50", "vgg16", "mobilenet_v3_small", "efficientnet_b0"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY_IMAGE else n for n in list_encoders()]
)
def test_every_encoder_returns_its_sequence_with_a_mask(name):
    from conftest import TINY

    from mbm_keras import create_encoder, encoder_info
    from mbm_keras.fusion_model import input_specs

    modality = encoder_info(name)["modality"]
    shape, _, kwargs = input_specs({modality: modality}, TINY)[modality]
    keras.utils.set_random_seed(0)
    pooled_only = create_encoder(name, modality, shape, offered=kwargs)
    both = create_encoder(name, modality, shape, sequence=True, offered=kwargs)
    both.set_weights(pooled_only.get_weights())  # the same layers and weights, more outputs
    x = tiny_inputs([modality], batch=3)[modality]
    if modality == "text":
        x[:, 5:] = 0  # padding
    out = both.predict(x, verbose=0)
    assert set(out) == {"pooled", "sequence", "mask"}
    np.testing.assert_allclose(out["pooled"], pooled_only.predict(x, verbose=0), atol=1e-5)
    assert out["sequence"].ndim == 3 and out["sequence"].shape[0] == 3 and out["mask"].shape == out["sequence"].shape[:2]
    if modality == "text":
        np.testing.assert_array_equal(out["mask"], (x != 0).astype("float32"))
    else:
        assert np.all(out["mask"] == 1)


@pytest.mark.parametrize("fusion", ["transformer", "cross_attention"])
def test_an_absent_feature_is_masked_out_of_a_sequence_fusion(fusion):
    model = build_tiny({"image": "small_cnn", "text": "gru", "audio": "logmel_cnn"}, fusion=fusion, num_classes=3,
                       missing_modalities=True, fusion_kwargs={"units": 16, "num_heads": 2})
    x = tiny_inputs(["image", "text", "audio"], batch=4)
    for m in ("image", "text", "audio"):
        x[f"{m}_mask"] = np.ones((4, 1), "float32")
    x["audio_mask"][:] = 0
    other = dict(x, audio=tiny_inputs(["audio"], batch=4, seed=7)["audio"])
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(other, verbose=0), atol=1e-6)
    x["audio_mask"][:] = 1
    assert np.abs(model.predict(x, verbose=0) - model.predict(dict(x, audio=other["audio"]), verbose=0)).max() > 1e-4


def test_cross_attention_query_is_a_feature():
    with pytest.raises(ValueError, match=r"query='video' is not a feature; the features are \['image', 'text'\]"):
        build_tiny({"image": "small_cnn", "text": "gru"}, fusion="cross_attention", fusion_kwargs={"query": "video"})
    with pytest.raises(ValueError, match="needs at least two features"):
        build_tiny({"image": "small_cnn"}, fusion="cross_attention")
    model = build_tiny({"image": "small_cnn", "text": "gru"}, fusion="cross_attention", fusion_kwargs={"query": "text"})
    assert model.get_layer("fusion").query == "text"


def test_a_logit_fusion_is_built_once(monkeypatch):
    import mbm_keras.fusion_model as fusion_model

    made = []
    real = fusion_model.create_fusion
    monkeypatch.setattr(fusion_model, "create_fusion", lambda *a, **k: made.append(k) or real(*a, **k))
    model = build_tiny({"image": "small_cnn", "text": "gru"}, fusion="late", num_classes=5)
    assert len(made) == 1 and made[0]["units"] == 5 and model.get_layer("fusion").units == 5
