"""Named features of registered modalities: two images, two texts, a time series,
audio and tabular cells in one model, trained, reloaded, exported and served from
raw files; shared encoders; serving equals training per modality; timeseries errors."""

import csv
import json
import os
import re
import subprocess
import sys
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mbm_keras.data import DataError, make_dataset
from mbm_keras.deploy import export_model, load_run_model
from mbm_keras.deploy.raw_inputs import explain, raw_signature, raw_to_inputs
from mbm_keras.modalities import list_modalities
from mbm_keras.training import train

CLASSES = ("calm", "sporty", "offroad")
FEATURES = {
    "front": ["image", "small_cnn"],
    "rear": ["image", "small_cnn"],
    "title": ["text", "gru"],
    "notes": ["text", "cnn"],
    "speed": ["timeseries", "conv1d"],
    "engine": ["audio", "logmel_cnn"],
    "specs": ["tabular", "mlp"],
}
COLUMNS = {"front": "front", "rear": "rear", "title": "title", "notes": "notes", "speed": "speed",
           "engine": "engine", "specs": {"numeric": ["power"], "categorical": ["fuel"]}, "label": "label"}


def _series(k, rng, steps=24):
    t = np.arange(steps)
    return np.stack([np.sin(t * (k + 1) / 4), np.cos(t / (k + 2)), rng.normal(k, 0.3, steps)], axis=1)


def write_cars(folder, n=36, seed=0):
    """A manifest of real files: PNG, WAV, .npy and .csv time series, texts, cells."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        k = i % 3
        colour = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]][k], np.uint8)
        for side, shift in (("front", 0), ("rear", 40)):
            pixels = np.clip(colour.astype(int) + shift + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{side}{i}.png")
        series = _series(k, rng)
        if i % 4 == 3:  # some rows as CSV with a header
            with open(folder / f"speed{i}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["speed", "steering", "accel"])
                writer.writerows(series.round(5).tolist())
            speed = f"speed{i}.csv"
        else:
            np.save(folder / f"speed{i}.npy", series.astype(np.float32 if i % 2 else np.float64))
            speed = f"speed{i}.npy"
        tone = (0.3 * np.sin(2 * np.pi * (300 + 200 * k) * np.arange(800) / 8000) * 32767).astype("<i2")
        with wave.open(str(folder / f"engine{i}.wav"), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(tone.tobytes())
        rows.append({"front": f"front{i}.png", "rear": f"rear{i}.png", "title": f"{CLASSES[k]} car number {i}",
                     "notes": ["quiet", "fast", "rugged"][k] + " ride", "speed": speed, "engine": f"engine{i}.wav",
                     "power": str(100 + 50 * k + i % 5), "fuel": ["petrol", "diesel", "electric"][(i + k) % 3],
                     "label": CLASSES[k]})
    with open(folder / "cars.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "cars.csv", rows


def cars_config(folder, **model):
    return {
        "data": {"train": str(folder / "cars.csv"), "val": str(folder / "cars.csv"), "columns": COLUMNS,
                 "batch_size": 12,
                 "preprocessing": {"image_size": [16, 16], "text_length": 6, "sample_rate": 8000,
                                   "audio_length": 800, "timeseries_length": 20}},
        "model": {"features": FEATURES, "share_encoders": {"rear": "front"}, **model},
        # balance none, keep the fusion: one input per feature, no masks (tests/test_balance.py trains these
        # features balanced, tests/test_validation.py compares fusions with single models).
        "train": {"epochs": 2, "learning_rate": 3e-3, "balance": "none", "keep_best_of": "fusion"},
        "output": str(folder / "run"),
    }


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cars")
    manifest, rows = write_cars(folder)
    config = cars_config(folder)
    (folder / "run.json").write_text(json.dumps(config))
    result = train(str(folder / "run.json"), verbose=0)
    return folder, manifest, rows, result


def test_named_features_train_with_one_input_per_feature_and_a_shared_encoder(cars):
    folder, _, _, result = cars
    model, pre = load_run_model(str(folder / "run"))
    assert sorted(model.input) == sorted(FEATURES)
    encoders = sorted(layer.name for layer in model.layers if layer.name.endswith("_encoder"))
    # "rear" calls front's encoder: one set of weights for both cameras.
    assert encoders == ["engine_encoder", "front_encoder", "notes_encoder", "specs_encoder", "speed_encoder",
                        "title_encoder"]
    front = model.get_layer("front_encoder")
    assert len(front._inbound_nodes) == 2
    assert model.input["speed"].shape == (None, 20, 3)
    assert pre.feature_modalities["rear"] == "image" and pre.features["speed"].channels == 3
    # Each text feature has its own vocabulary file; the .keras reloads under safe_mode.
    assert (folder / "run" / "vocabulary-title.txt").exists() and (folder / "run" / "vocabulary-notes.txt").exists()
    reloaded = keras.models.load_model(folder / "run" / "model.keras", safe_mode=True)
    ds = make_dataset(folder / "cars.csv", preprocessor=pre, batch_size=8)
    x, _ = next(iter(ds))
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert np.isfinite(result["history"]["loss"]).all()


def test_serving_and_training_produce_identical_inputs_for_every_modality(cars):
    """The skew test: the raw-input signature's preprocessing and make_dataset
    give bit-identical model inputs for the same files and cells."""
    folder, manifest, rows, _ = cars
    model, pre = load_run_model(str(folder / "run"))
    assert {f.name for f in pre.features.values()} == set(list_modalities())  # every registered modality
    ds = make_dataset(manifest, preprocessor=pre, batch_size=len(rows))
    expected, _ = next(iter(ds))
    raw = {}
    for name, feature in pre.features.items():
        raw[name] = tf.constant([feature.raw_example(_cell(folder, row, name, feature), name, feature.raw_spec().shape,
                                                     feature.columns()) for row in rows])
    serve = tf.function(lambda r: raw_to_inputs(r, pre, list(model.input)), input_signature=[raw_signature(pre)])
    got = serve(raw)
    for name in pre.features:
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy(), err_msg=name)


def _cell(folder, row, name, feature):
    if feature.name == "tabular":
        return [row[c] for c in feature.columns()]
    return str(folder / row[name]) if feature.file_based else row[name]


@pytest.mark.slow
def test_exports_and_cli_predict_with_named_features_match_keras(cars, tmp_path):
    folder, _, rows, _ = cars
    run = str(folder / "run")
    row = rows[4]
    args = []
    for name, value in (("front", folder / row["front"]), ("rear", folder / row["rear"]), ("title", row["title"]),
                        ("notes", row["notes"]), ("speed", folder / row["speed"]), ("engine", folder / row["engine"])):
        args += ["--feature", f"{name}={value}"]
    args += ["--feature", f"specs={row['power']},{row['fuel']}"]
    saved = export_model(run, "saved_model", str(tmp_path / "saved"), verbose=False)
    lite = export_model(run, "tflite", str(tmp_path / "lite"), verbose=False)
    assert saved["check"]["max_abs_diff"] <= 1e-4 and lite["check"]["max_abs_diff"] <= 1e-4
    side = json.loads((tmp_path / "lite" / "model.json").read_text())
    assert side["preprocessing"]["speed"]["modality"] == "timeseries" and side["preprocessing"]["speed"]["channels"] == 3
    assert side["inputs"]["speed"] == {"shape": [1, 20, 3], "dtype": "float32"}
    # The reference tokenizer shipped beside the model reads each named text feature's vocabulary.
    from mbm_keras.deploy.reference_tokenizer import Tokenizer

    _, pre = load_run_model(run)
    for name in ("title", "notes"):
        reference = Tokenizer.from_export(str(tmp_path / "lite" / "model.json"), feature=name)
        texts = [r[name] for r in rows[:4]] + ["unseen words"]
        assert [reference(t) for t in texts] == pre.features[name].tokenizer(tf.constant(texts)).numpy().tolist()
    answers = {}
    for kind, path in (("keras", run), ("saved_model", saved["out"]), ("tflite", lite["out"])):
        proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "predict", "--model", path, "--top", "3", *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        answers[kind] = {line.split()[0]: float(line.split()[1]) for line in proc.stdout.strip().splitlines()}
    assert set(answers["keras"]) == set(CLASSES)
    for kind in ("saved_model", "tflite"):
        for c in CLASSES:
            assert abs(answers[kind][c] - answers["keras"][c]) <= 1e-4, (kind, answers)
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "predict", "--model", run, "--feature", "side=x.png"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no input 'side'" in proc.stderr


def _bad_manifest(folder, rows, bad):
    path = folder / "bad.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:6] + [{**rows[6], "speed": bad}])
    return path


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        (np.zeros((20, 5), np.float32), r"the series has 5 channel\(s\); the model takes 3"),
        (np.array([[0.0, np.nan, 1.0]] * 20, np.float32), "the series holds NaN or infinite values"),
        (np.array([[0.0, np.inf, 1.0]] * 20), "the series holds NaN or infinite values"),
        ("1,2,3\n4,abc,6\n", "a CSV cell is not a number"),
        ("1,2,3\n4,5\n", "CSV rows with different numbers of columns"),
        (np.zeros((2, 3, 4), np.float32), "a .npy array of rank 3"),
        (b"\x00\x01\x02garbage", "not a .npy"),
    ],
)
def test_bad_timeseries_files_name_row_column_and_file(cars, tmp_path, content, message):
    folder, _, rows, _ = cars
    _, pre = load_run_model(str(folder / "run"))
    name = "missing.npy"
    if isinstance(content, np.ndarray):
        np.save(folder / "bad_series.npy", content)
        name = "bad_series.npy"
    elif isinstance(content, str):
        (folder / "bad_series.csv").write_text(content)
        name = "bad_series.csv"
    elif isinstance(content, bytes):
        (folder / "bad_series.npy").write_bytes(content)
        name = "bad_series.npy"
    manifest = _bad_manifest(folder, rows, name)
    with pytest.raises(DataError, match=rf"bad.csv row 7, column 'speed' \(.*{name}\): .*{message}"):
        make_dataset(manifest, preprocessor=pre, verify="decode")
    ds = make_dataset(manifest, preprocessor=pre, batch_size=64)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:  # the default: found while streaming
        list(ds)
    assert re.search(rf"bad.csv row 7, .*column 'speed' \(.*{name}\)", explain(info.value))
    assert re.search(rf"bad.csv row 7, column 'speed' \(.*{name}\): .*{message}", ds.report.explain_failure())


@pytest.mark.slow
def test_timeseries_through_the_cli_and_a_failing_train_writes_no_model(cars, tmp_path):
    folder, _, rows, _ = cars
    run = str(folder / "run")
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "evaluate", "--model", run, "--data",
                           str(folder / "cars.csv"), "--out", str(tmp_path / "eval.json"), "--robustness"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["robustness"]["ablation"]) == set(FEATURES)
    # A bad series in the training manifest: exit 2 naming row, column and file; no model written.
    np.save(folder / "nan_series.npy", np.full((20, 3), np.nan, np.float32))
    bad = folder / "train_bad.csv"
    with open(bad, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:9] + [{**rows[9], "speed": "nan_series.npy"}])
    config = cars_config(folder)
    config["data"].update(train=str(bad), val=None)
    config["output"] = str(tmp_path / "bad_run")
    (tmp_path / "bad.json").write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "train", "--config", str(tmp_path / "bad.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "train_bad.csv row 10, column 'speed'" in proc.stderr and "nan_series.npy" in proc.stderr
    assert "NaN or infinite" in proc.stderr
    assert not os.path.exists(tmp_path / "bad_run" / "model.keras")


def test_feature_config_errors_name_the_key(tmp_path):
    from mbm_keras import build_fusion_model
    from mbm_keras.training import ConfigError, load_config

    config = cars_config(tmp_path)
    config["model"]["fusion_kwargs"] = {"unit": 8}
    with pytest.raises(ConfigError, match=r"model.fusion_kwargs.unit is not an argument of fusion 'concat'"):
        load_config(config)
    config = cars_config(tmp_path)
    config["model"]["features"] = {"front": ["image"]}
    with pytest.raises(ConfigError, match=r"features\['front'\] must be \(modality, encoder\)"):
        load_config(config)
    with pytest.raises(ValueError, match=r"Features 'rear' and 'front' share an encoder.*same modality"):
        build_fusion_model(features={"front": ("image", "small_cnn"), "rear": ("text", "gru")},
                           share_encoders={"rear": "front"}, image_shape=(16, 16, 3), text_length=4, vocab_size=9)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'timeseries_lenght'"):
        build_fusion_model(timeseries="conv1d", timeseries_lenght=4, timeseries_channels=2)


def test_two_text_features_share_one_encoder_and_one_vocabulary(cars, tmp_path):
    from mbm_keras import build_fusion_model
    from mbm_keras.data import Preprocessor, fit_preprocessor

    folder, manifest, rows, _ = cars
    columns = {"title": "title", "notes": "notes", "label": "label"}
    pre = fit_preprocessor(manifest, columns, {"title": "text", "notes": "text"}, share={"notes": "title"},
                           text_length=6)
    title, notes = pre.features["title"].tokenizer, pre.features["notes"].tokenizer
    assert title.vocabulary == notes.vocabulary and {"quiet", "calm"} <= set(title.vocabulary)
    model = build_fusion_model(features={"title": ("text", "gru"), "notes": ("text", "gru")},
                               share_encoders={"notes": "title"}, **pre.model_kwargs())
    assert [layer.name for layer in model.layers if layer.name.endswith("_encoder")] == ["title_encoder"]
    pre.save(tmp_path)
    again = Preprocessor.load(tmp_path)
    assert again.share == {"notes": "title"} and again.features["notes"].tokenizer.vocabulary == title.vocabulary
    x, _ = next(iter(make_dataset(manifest, preprocessor=again, batch_size=4)))
    assert model.predict(x, verbose=0).shape == (4, 3)


def test_zoo_lists_modalities_and_a_loader_names_what_it_looked_for(tmp_path, capsys):
    from mbm_keras.cli import main
    from mbm_keras.deploy import predict
    from mbm_keras.run import Run, artifact_kind

    assert main(["zoo", "--modality", "timeseries"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["timeseries", "conv1d,", "series_gru"] for line in out.splitlines()), out
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"looked for saved_model.pb, model.tflite, model.onnx or model.keras"):
        artifact_kind(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"looked for saved_model.pb, model.tflite, model.onnx or model.keras"):
        predict(str(tmp_path / "empty"), text="a car")
    with pytest.raises(FileNotFoundError, match=r"No model.keras in .*looked for .*model.keras"):
        Run(tmp_path / "empty").load()
