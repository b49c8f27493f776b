"""Autoencoder pretraining: build_autoencoder for every modality, `pretrain()` /
`mbm-keras pretrain` writing encoder weights a classifier's config takes,
the reconstruction picture, resume after a kill, config errors."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import TINY, tiny_inputs
from test_training import run_config

from mbm_keras import build_fusion_model
from mbm_keras.pretraining import build_autoencoder, reconstruction_model
from mbm_keras.training import ConfigError, pretrain, train

EVERY = {"image": ("image", "small_cnn"), "text": ("text", "gru"), "audio": ("audio", "logmel_cnn"),
         "tabular": ("tabular", "mlp"), "timeseries": ("timeseries", "conv1d")}


def test_an_autoencoder_per_modality_learns_saves_and_hands_its_encoders_over(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_autoencoder(EVERY, TINY, seed=0, learning_rate=3e-3)
    x = tiny_inputs(list(EVERY), batch=16)
    first = model.evaluate(x, np.zeros(16), verbose=0)
    model.fit(x, np.zeros(16), epochs=15, batch_size=8, verbose=0)
    assert model.evaluate(x, np.zeros(16), verbose=0) < 0.9 * first
    model.save(tmp_path / "ae.keras")
    reloaded = keras.saving.load_model(tmp_path / "ae.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    shapes = {name: [np.shape(v) for v in reconstruction_model(model, name).predict(x, verbose=0)] for name in EVERY}
    assert shapes["image"] == [(16, 32, 32, 3)] * 2 and shapes["text"] == [(16, 8), (16, 8, 50)]
    assert shapes["tabular"] == [(16, 5)] * 2 and shapes["timeseries"] == [(16, 16, 3)] * 2
    assert shapes["audio"][0] == shapes["audio"][1] and len(shapes["audio"][0]) == 3  # log-mel frames x bands
    for name, (modality, encoder) in EVERY.items():  # the weights fit the classifier's encoder as they are
        path = str(tmp_path / f"{name}.weights.h5")
        model.get_layer(f"{name}_encoder").save_weights(path)
        classifier = build_fusion_model(**{modality: encoder}, num_classes=2, **TINY,
                                        **{f"{modality}_kwargs": {"weights": path}})
        for a, b in zip(classifier.get_layer(f"{name}_encoder").weights, model.get_layer(f"{name}_encoder").weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_text_masking_only_in_training_and_never_on_padding():
    from mbm_keras.pretraining import TokenMasking

    ids = np.array([[5, 6, 7, 8, 0, 0]] * 200, "int32")
    masked_ids, masked = (np.asarray(v) for v in TokenMasking(0.5, seed=1)(ids, training=True))
    assert (masked[:, 4:] == 0).all() and 0.4 < masked[:, :4].mean() < 0.6
    assert (masked_ids[masked == 1] == 1).all() and (masked_ids[masked == 0] == ids[masked == 0]).all()
    fixed, where = (np.asarray(v) for v in TokenMasking(0.5, seed=1)(ids, training=False))
    assert (where == [[0, 1, 0, 1, 0, 0]]).all() and (fixed == [[5, 1, 7, 1, 0, 0]]).all()  # every 2nd, not padding


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """`mbm-keras pretrain` on the files of tests/test_training.py (their labels unused)."""
    folder = tmp_path_factory.mktemp("pretrain")
    path = run_config(folder, model__audio="logmel_cnn", train__epochs=3, task__kind="autoencoder",
                      data__columns={"image": "img", "text": "caption", "audio": "wav", "label": "label"},
                      data__preprocessing={"image_size": [16, 16], "text_length": 6, "max_tokens": 100,
                                           "sample_rate": 8000, "audio_length": 800})
    result = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "pretrain", "--config", str(path), "--out",
                             str(folder / "pre")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result.stdout


@pytest.mark.slow  # the shared pretraining run; test-fast keeps the per-modality autoencoder test
def test_pretrain_writes_encoder_weights_a_picture_and_scores(pretrained):
    folder, stdout = pretrained
    run = folder / "pre"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "autoencoder" and set(summary["val_loss"]) == {"image", "text", "audio"}
    assert all(np.isfinite(v) for v in summary["val_loss"].values())
    for name in ("image", "text", "audio"):
        assert (run / "encoders" / f"{name}.weights.h5").is_file()
    assert (run / "reconstruction.png").stat().st_size > 5000
    assert "Pretraining image (image), text (text), audio (audio) as autoencoders" in stdout
    assert "reconstructions: " in stdout
    losses = [float(line.split(",")[1]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]
    result = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "evaluate", "--model", str(run), "--data", str(folder / "val.csv")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "is a pretraining run (mbm-keras pretrain)" in result.stderr


@pytest.mark.slow  # the shared pretraining run; test-fast keeps the per-modality autoencoder test
def test_a_classifier_config_starts_from_the_pretrained_encoders(pretrained):
    folder, _ = pretrained
    path = run_config(folder, model__audio="logmel_cnn", train__epochs=1,
                      data__columns={"image": "img", "text": "caption", "audio": "wav", "label": "label"},
                      data__preprocessing={"image_size": [16, 16], "text_length": 6, "max_tokens": 100,
                                           "sample_rate": 8000, "audio_length": 800},
                      model__image_kwargs={"weights": "pre/encoders/image.weights.h5"},  # relative to the config
                      model__text_kwargs={"weights": "pre/encoders/text.weights.h5"})
    result = train(path, output=str(folder / "classifier"), verbose=0)
    assert result["history"]["loss"][0] > 0
    # Before training, the classifier's encoder is the pretrained one.
    config = json.loads((folder / "classifier" / "config.json").read_text())
    assert config["model"]["image_kwargs"]["weights"] == str(folder / "pre" / "encoders" / "image.weights.h5")


def test_pretrain_config_errors(tmp_path):
    path = run_config(tmp_path, task__kind="retrieval", task__query=["text"], task__candidate=["image"])
    with pytest.raises(ConfigError, match=r"this config's task.kind is 'retrieval'; autoencoder runs need task.kind autoencoder"):
        pretrain(path)
    path = run_config(tmp_path, task__kind="autoencoder", task__noise=2.0)
    with pytest.raises(ConfigError, match=r"task.noise must be >= 0 and <= 1. Received: task.noise=2.0"):
        pretrain(path)
    path = run_config(tmp_path, task__mask_rate=0.2)
    with pytest.raises(ConfigError, match=r"task.mask_rate is for task.kind: autoencoder"):
        train(path)


@pytest.mark.slow
def test_a_killed_pretraining_resumes_to_the_same_weights(tmp_path):
    import signal
    import time

    path = run_config(tmp_path, train__epochs=4, task__kind="autoencoder")
    config = json.loads(path.read_text())
    config["data"]["batch_size"] = 4
    path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "mbm_keras.cli", "pretrain", "--config", str(path)]
    reference = subprocess.run(command + ["--out", str(tmp_path / "straight")], capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = killed / "backup-stage1" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metadata.is_file() and '"epoch": 1' in metadata.read_text():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(command + ["--out", str(killed)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("image", "text"):
        a = keras.saving.load_model(tmp_path / "straight" / "model.keras").get_layer(f"{name}_encoder").get_weights()
        b = keras.saving.load_model(killed / "model.keras").get_layer(f"{name}_encoder").get_weights()
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("missing", [1.0, 0.75])
def test_a_manifest_without_enough_usable_files_is_a_one_line_error(tmp_path, missing):
    import csv

    from test_data import write_csv

    from mbm_keras.data import DataError

    path = run_config(tmp_path, task__kind="autoencoder", train__epochs=1, data__on_error="skip",
                      data__columns={"image": "img", "label": "label"}, model__text=None, data__val=None)
    with open(tmp_path / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):  # files that are not there: found only when read (verify: none)
        if i < missing * len(rows):
            row["img"] = "gone/" + row["img"]
    write_csv(tmp_path / "train.csv", rows)
    bad = int(missing * len(rows))
    with pytest.raises(DataError, match=rf"too many rows failed while reading .*train.csv: {bad} of {len(rows)} .*check-data"):
        pretrain(path, verbose=0)
