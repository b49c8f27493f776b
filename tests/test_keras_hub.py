"""KerasHub presets as zoo encoders: the preset's tokenizer as the text feature's
preprocessing (tf.data, SavedModel, TFLite sidecar), offline loading, freezing,
exports. Presets are tiny random BERTs saved to temporary folders: no download."""

import json
import os
import shutil
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from presets import tiny_bert_preset
from test_data import make_files, write_csv
from test_training import run_config

from mbm_keras import build_fusion_model
from mbm_keras.codecs.text import TextTokenizer
from mbm_keras.deploy.reference_tokenizer import Tokenizer
from mbm_keras.hub import PresetError, resolve_preset
from mbm_keras.modalities import get_modality

TEXTS = ["A red CAT, sits!", "一只猫在睡觉。", "Ünïcode café naïve", "tabs\tand\nnewlines", "the cats were sitting",
         "x-ray e-mail 3.14", "quickly running runners", "", "  spaces   ", "CAFÉ Ünïcode", "zero\u200bwidth soft\u00adhyphen",
         "ＦＵＬＬ　ｗｉｄｔｈ！", "[CLS] literal [SEP]", "emoji 🐱 cat", "Straße ǅ ﬁ", "a " * 30]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return tiny_bert_preset(str(tmp_path_factory.mktemp("hub") / "tiny_bert"), vocabulary_size=64)


def _reference(tokenizer, length):
    """The TFLite sidecar's stdlib tokenizer, from the text feature's model.json entry."""
    feature = get_modality("text")("text", "caption", {"text_tokenizer": "preset", "text_length": length})
    feature.tokenizer = tokenizer
    side = feature.sidecar()
    assert side["kind"] == "preset_wordpiece" and side["start"] == [2] and side["end"] == [3]
    return Tokenizer(tokenizer.vocabulary, side["kind"], side["length"], preset=side)


@pytest.mark.parametrize("length", [4, 12])
def test_preset_tokenizer_is_keras_hubs_own_and_the_reference_reproduces_it(preset, length):
    import keras_hub

    tokenizer = TextTokenizer("preset", length, preset=preset).fit(["unused"])
    ids = tokenizer(tf.constant(TEXTS)).numpy()
    own = keras_hub.models.TextClassifierPreprocessor.from_preset(preset, sequence_length=length)
    np.testing.assert_array_equal(ids, own(tf.constant(TEXTS))["token_ids"].numpy())
    assert ids.shape == (len(TEXTS), length) and (ids[:, 0] == 2).all()  # [CLS] first
    assert (ids == 1).any() and (ids == 0).any()  # unknown words and padding occur
    reference = _reference(tokenizer, length)
    assert [reference(t) for t in TEXTS] == ids.tolist()


def test_preset_tokenizer_is_saved_with_the_run_and_loads_without_the_preset(preset, tmp_path):
    copy = shutil.copytree(preset, tmp_path / "gone")
    tokenizer = TextTokenizer("preset", 8, preset=str(copy)).fit(["x"])
    tokenizer.save(str(tmp_path), "vocabulary-title.txt")
    shutil.rmtree(copy)
    loaded = TextTokenizer.load(str(tmp_path), tokenizer.get_config(), "vocabulary-title.txt")
    np.testing.assert_array_equal(loaded(tf.constant(TEXTS)).numpy(), tokenizer(tf.constant(TEXTS)).numpy())


def test_preset_errors_are_one_line_and_name_the_culprit(preset, tmp_path, monkeypatch):
    with pytest.raises(PresetError, match=r"Unknown KerasHub preset 'bert_tiny_en_uncasd'. Close matches: bert_tiny_en_uncased"):
        resolve_preset("bert_tiny_en_uncasd")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    start = time.monotonic()
    with pytest.raises(PresetError, match=r"'bert_tiny_en_uncased' is not in the cache \(.*cache\).*does not download"):
        resolve_preset("bert_tiny_en_uncased")
    assert time.monotonic() - start < 5
    with pytest.raises(PresetError, match=r"preset folder not found: .*nowhere"):
        resolve_preset(str(tmp_path / "nowhere"))
    with pytest.raises(PresetError, match=r"has no config.json"):
        resolve_preset(str(tmp_path))
    with pytest.raises(PresetError, match=r"text_length=40 is longer than preset .*max_sequence_length=16"):
        TextTokenizer("preset", 40, preset=preset).fit(["x"])
    with pytest.raises(ValueError, match=r"text_tokenizer='preset' and text_preset go together"):
        TextTokenizer("preset", 8)
    with pytest.raises(ValueError, match=r"needs a KerasHub preset"):
        build_fusion_model(text="keras_hub", num_classes=2, text_length=8, vocab_size=64)
    with pytest.raises(ValueError, match=r"vocab_size=50 but preset .* has 64 tokens"):
        build_fusion_model(text="keras_hub", num_classes=2, text_length=8, vocab_size=50, text_kwargs={"preset": preset})


def test_a_vision_preset_is_refused_as_a_text_encoder(tmp_path):
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64], stackwise_num_blocks=[1],
        stackwise_num_strides=[1], block_type="basic_block", image_shape=(32, 32, 3))
    backbone.save_to_preset(str(tmp_path / "resnet"))
    with pytest.raises(PresetError, match=r"\(ResNetBackbone\) is a vision backbone, not a text one"):
        resolve_preset(str(tmp_path / "resnet"), "text")


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory, preset):
    """An image + BERT-text run trained through the config, with the preset given
    relative to the config file; the preset folder is deleted afterwards."""
    from mbm_keras.training import train

    folder = tmp_path_factory.mktemp("hub_run")
    local = shutil.copytree(preset, folder / "presets" / "bert")
    path = run_config(folder, data__preprocessing={"image_size": [16, 16], "text_length": 8, "text_tokenizer": "preset",
                                                   "text_preset": "presets/bert"},
                      model__text="keras_hub", model__fusion="concat", train__epochs=4)
    keras.utils.set_random_seed(0)
    result = train(path)
    shutil.rmtree(local)
    return folder, result


def test_a_config_with_a_keras_hub_text_encoder_trains(hub_run):
    folder, result = hub_run
    assert result["history"]["val_accuracy"][-1] == 1.0  # colour words and colours: separable
    model = keras.saving.load_model(os.path.join(result["output"], "model.keras"), safe_mode=True)
    assert type(model.get_layer("text_encoder").get_layer("bert_backbone")).__name__ == "BertBackbone"
    saved = json.loads((folder / "run" / "preprocessor.json").read_text())
    assert saved["options"]["text_preset"] == str(folder / "presets" / "bert")  # resolved beside the config
    assert os.path.isfile(folder / "run" / "vocabulary_preset" / "tokenizer.json")


@pytest.mark.slow  # an evaluate/export of the shared run; the preset tokenizer's parity runs in test-fast
def test_robustness_noise_uses_the_presets_own_unknown_and_keeps_its_special_tokens(hub_run):
    from mbm_keras.data import Preprocessor
    from mbm_keras.evaluate import evaluate
    from mbm_keras.modalities.text import Text

    folder, result = hub_run
    feature = Preprocessor.load(result["output"]).features["text"]
    special = feature.tokenizer.special_ids()
    options = feature.perturb_options()
    assert options["unknown"] == special["unknown"]  # the preset's [UNK]
    assert set(options["keep"]) == {special["padding"], *special["start"], *special["end"]}
    ids = feature.tokenizer(tf.constant(["red green blue", "a"])).numpy()
    noisy = Text.perturb(ids, 1.0, np.random.default_rng(0), **options)
    kept = np.isin(ids, options["keep"])
    np.testing.assert_array_equal(noisy[kept], ids[kept])  # [CLS], [SEP], padding stay
    assert (noisy[~kept] == special["unknown"]).all() and (~kept).sum() >= 4
    report = evaluate(result["output"], str(folder / "val.csv"), robustness=True)["robustness"]
    assert set(report["noise"]) == {"image", "text"} and all(0 <= a <= 1 for a in report["noise"]["text"].values())


@pytest.mark.slow  # an evaluate/export of the shared run; the preset tokenizer's parity runs in test-fast
def test_keras_hub_run_exports_match_keras_and_the_sidecar_tokenizes_like_training(hub_run, tmp_path):
    from mbm_keras.deploy import export_model, predict
    from mbm_keras.deploy.tflite import run_tflite, tflite_interpreter

    folder, result = hub_run
    run = result["output"]
    captions = ["a crimson thing number 3", "an azure thing number 7", "A CRIMSON Thing!"]
    image = str(folder / "img" / "0.png")
    keras_top = [predict(run, image=image, text=c)[0] for c in captions]
    saved = export_model(run, "saved_model", out=str(tmp_path / "sm"), verbose=False)["out"]
    assert [predict(saved, image=image, text=c)[0][0] for c in captions] == [t[0] for t in keras_top]
    tflite = export_model(run, "tflite", out=str(tmp_path / "tfl"), verbose=False)["out"]
    # An app: the stdlib tokenizer beside model.tflite, then the interpreter.
    reference = Tokenizer.from_export(os.path.join(tflite, "model.json"))
    model = keras.saving.load_model(os.path.join(run, "model.keras"), safe_mode=True)
    from mbm_keras.data.preprocessor import Preprocessor

    text_ids = Preprocessor.load(run).features["text"].tokenizer(tf.constant(captions)).numpy()
    assert [reference(c) for c in captions] == text_ids.tolist()
    pixels = np.stack([model.get_layer("image").output.shape[1:] and np.full((16, 16, 3), 100.0, "float32")] * 3)
    x = {"image": pixels, "text": np.array([reference(c) for c in captions], "int32")}
    got = run_tflite(tflite_interpreter(os.path.join(tflite, "model.tflite")), x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_freezing_and_unfreezing_find_the_keras_hub_backbone():
    from conftest import TINY, tiny_inputs

    from mbm_keras.finetune import find_backbones, freeze_backbones, unfreeze_backbone

    model = build_fusion_model(image="small_cnn", text="keras_hub", num_classes=2, **TINY)
    assert freeze_backbones(model) == ["bert_backbone"]
    backbone = model.get_layer("text_encoder").get_layer("bert_backbone")
    before = [w.numpy().copy() for w in backbone.weights]
    x = tiny_inputs(["image", "text"], batch=4)
    model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, backbone.weights))
    unfreeze_backbone(model, learning_rate=1e-3)
    model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(before, backbone.weights))
    assert [b.name for b in find_backbones(model)] == ["bert_backbone"]


def test_any_text_encoder_can_read_preset_tokens(preset, tmp_path):
    rows = make_files(tmp_path, n=8)
    write_csv(tmp_path / "train.csv", rows)
    from mbm_keras.data import fit_preprocessor, make_dataset

    prep = fit_preprocessor(str(tmp_path / "train.csv"), columns={"text": "caption", "label": "label"},
                            text_tokenizer="preset", text_preset=preset, text_length=8)
    kwargs = prep.model_kwargs()
    assert kwargs["vocab_size"] == 64 and kwargs["text_preset"] == preset
    model = build_fusion_model(text="lstm", **kwargs)  # the preset's ids, an LSTM's embedding
    model.fit(make_dataset(str(tmp_path / "train.csv"), preprocessor=prep, batch_size=4), epochs=1, verbose=0)


def test_a_keras_hub_vision_preset_encodes_images_with_its_own_rescaling(preset):
    from conftest import TINY, tiny_inputs

    from mbm_keras import create_encoder

    encoder = create_encoder("keras_hub_image", "image", (32, 32, 3), preset=TINY["image_preset"])
    x = tiny_inputs(["image"], batch=2)["image"]
    scaled = keras.ops.convert_to_numpy(encoder.get_layer("preprocessing")(x))
    np.testing.assert_allclose(scaled, x * np.array([1 / 58.4, 1 / 57.1, 1 / 57.4]) + np.array([-2.12, -2.04, -1.80]),
                               rtol=1e-5, atol=1e-5)  # the preset's image converter, per channel
    assert encoder.predict(x, verbose=0).shape == (2, 64)
    with pytest.raises(PresetError, match=r"\(BertBackbone\) is not a vision backbone"):
        create_encoder("keras_hub_image", "image", (32, 32, 3), preset=preset)
    with pytest.raises(ValueError, match=r"needs a KerasHub vision preset"):
        create_encoder("keras_hub_image", "image", (32, 32, 3))


def test_preset_folders_in_a_config_are_relative_to_it(tmp_path):
    from mbm_keras.training import load_config

    path = run_config(tmp_path, data__preprocessing={"text_tokenizer": "preset", "text_preset": "presets/bert"},
                      model__image_kwargs={"preset": "./presets/resnet"}, model__text_kwargs={"preset": "bert_tiny_en_uncased"})
    config = load_config(path)
    assert config["data"]["preprocessing"]["text_preset"] == str(tmp_path / "presets" / "bert")
    assert config["model"]["image_kwargs"]["preset"] == str(tmp_path / "presets" / "resnet")
    assert config["model"]["text_kwargs"]["preset"] == "bert_tiny_en_uncased"  # a name stays a name


def test_a_named_preset_is_read_from_the_cache_and_a_partial_one_is_refused(preset, tmp_path, monkeypatch):
    from mbm_keras import hub

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    _, expected = hub._cached_path("bert_tiny_en_uncased")
    assert expected.startswith(str(tmp_path / "cache"))
    os.makedirs(expected)
    shutil.copy(os.path.join(preset, "config.json"), expected)  # a download that fetched the backbone only
    with pytest.raises(PresetError, match=r"holds only the backbone of KerasHub preset 'bert_tiny_en_uncased'"):
        resolve_preset("bert_tiny_en_uncased")
    shutil.rmtree(expected)
    shutil.copytree(preset, expected)  # as KerasHub leaves it after a full download
    assert resolve_preset("bert_tiny_en_uncased") == expected
    ids = TextTokenizer("preset", 8, preset="bert_tiny_en_uncased").fit(["x"])(tf.constant(["a red bird"])).numpy()
    assert ids[0, 0] == 2 and ids.shape == (1, 8)


@pytest.mark.slow
def test_keras_hub_run_exports_to_int8_tflite(hub_run, tmp_path):
    from mbm_keras.deploy import export_model, predict

    folder, result = hub_run
    export = export_model(result["output"], "tflite", quantize="int8", out=str(tmp_path / "int8"), verbose=False)
    assert export["check"]["top1_agreement"] >= 0.9, export["check"]
    top = predict(export["out"], image=str(folder / "img" / "0.png"), text="a crimson thing number 0")[0][0]
    assert top == predict(result["output"], image=str(folder / "img" / "0.png"), text="a crimson thing number 0")[0][0]
