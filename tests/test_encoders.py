"""Every registered encoder, built with weights=None at tiny shapes."""

import numpy as np
import pytest
from conftest import TINY, tiny_inputs
from helpers import build_tiny, run_model_checks

from mbm_keras import MODALITIES, create_encoder, encoder_info, list_encoders
from mbm_keras.fusion_model import input_specs

def encoder_args(modality):
    """`(input_shape, builder kwargs)` at the modality's tiny spec."""
    shape, _, kwargs = input_specs({modality: modality}, TINY)[modality]
    return shape, kwargs


def test_every_modality_has_encoders():
    assert set(list_encoders("image")) >= {"resnet50", "vgg16", "mobilenet_v3_small", "efficientnet_b0", "small_cnn"}
    assert set(list_encoders("text")) >= {"lstm", "bilstm", "gru", "cnn"}
    assert set(list_encoders("audio")) >= {"logmel_cnn", "logmel_lstm"}
    assert set(list_encoders("tabular")) >= {"mlp"}
    assert set(list_encoders("timeseries")) >= {"conv1d", "series_gru"}
    assert sorted(list_encoders()) == sorted(sum((list_encoders(m) for m in MODALITIES), []))


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_outputs_pooled_features(name):
    modality = encoder_info(name)["modality"]
    shape, kwargs = encoder_args(modality)
    encoder = create_encoder(name, modality, shape, offered=kwargs)
    assert encoder.name == f"{modality}_encoder"
    features = encoder.predict(tiny_inputs([modality], batch=3)[modality], verbose=0)
    assert features.ndim == 2 and features.shape[0] == 3 and features.shape[1] > 0
    assert np.all(np.isfinite(features))


# Full-size backbones take about a minute each to trace a training step on 2 cores.
HEAVY = {"resnet50", "vgg16", "mobilenet_v3_small", "efficientnet_b0"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_encoders()]
)
def test_encoder_in_fusion_model(name, tmp_path):
    modality = encoder_info(name)["modality"]
    model = build_tiny({modality: name}, num_classes=3)
    inputs = tiny_inputs([modality], batch=8)
    labels = np.arange(8) % 3
    run_model_checks(model, inputs, labels, tmp_path, num_classes=3)


def test_encoder_kwargs_override():
    model = build_tiny({"text": "gru", "tabular": "mlp"}, text_kwargs={"units": 16}, tabular_kwargs={"hidden_units": (7,)})
    assert model.get_layer("text_encoder").output.shape == (None, 16)
    assert model.get_layer("tabular_encoder").output.shape == (None, 7)


def test_unknown_encoder_kwarg_names_the_encoder():
    with pytest.raises(TypeError, match=r"'gru' \(text\).*text_kwargs"):
        build_tiny({"text": "gru"}, text_kwargs={"filters": 3})


def test_audio_shorter_than_one_frame_is_refused():
    with pytest.raises(ValueError, match=r"audio_length=100"):
        build_tiny({"audio": "logmel_cnn"}, audio_length=100)


def test_backbone_preprocessing_is_inside_the_model():
    # Raw [0, 255] pixels in: ResNet50's "caffe" preprocessing (RGB->BGR, minus
    # the ImageNet mean) must be applied by the encoder, not by the user.
    import keras

    encoder = create_encoder("resnet50", "image", (32, 32, 3))
    pre = encoder.get_layer("preprocessing")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pre(x)), expected, atol=1e-4)


def test_an_audio_example_gets_the_same_features_alone_and_in_any_batch():
    # keras.layers.MelSpectrogram floors decibels at (max over the whole batch) - top_db: a quiet clip batched with a
    # loud one lost its quiet bands, and served alone (batch 1: TFLite, predict) it gave other features than in
    # training. The audio front end floors each example at its own max.
    import keras

    from mbm_keras.layers import LogMelSpectrogram

    rng = np.random.default_rng(0)
    t = np.arange(2000) / 8000
    quiet = (1e-3 * np.sin(2 * np.pi * 440 * t) + 1e-6 * rng.normal(size=t.shape)).astype("float32")
    quiet[1000:] = 0  # a clip padded with silence
    loud = (0.9 * np.sin(2 * np.pi * 1200 * t)).astype("float32")
    options = dict(fft_length=256, sequence_stride=80, sequence_length=200, sampling_rate=8000, num_mel_bins=20,
                   power_to_db=True)
    ours, theirs = LogMelSpectrogram(**options), keras.layers.MelSpectrogram(**options)
    alone, batched = ours(quiet[None]), ours(np.stack([quiet, loud]))
    np.testing.assert_allclose(np.asarray(batched[0]), np.asarray(alone[0]), atol=1e-4)
    assert np.abs(np.asarray(theirs(np.stack([quiet, loud]))[0]) - np.asarray(theirs(quiet[None])[0])).max() > 10  # dB
    encoder = create_encoder("logmel_cnn", "audio", (2000,), sample_rate=8000)
    np.testing.assert_allclose(np.asarray(encoder(np.stack([quiet, loud]))[0]), np.asarray(encoder(quiet[None])[0]),
                               atol=1e-4)
