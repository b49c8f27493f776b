"""Hostile inputs: bad configs, diverging training, run folders that hold
something else, and the resume that must not ignore a changed config."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_training import run_config

from mbm_keras.training import ConfigError, load_config, train
from mbm_keras.training.callbacks import EpochLog, TrainingDiverged
from mbm_keras.training.run_folder import ResumeMismatchError, RunFolderError


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train__epochs", 0, "train.epochs must be >= 1. Received: train.epochs=0"),
        ("train__epochs", -1, "train.epochs must be >= 1. Received: train.epochs=-1"),
        ("train__learning_rate", -0.1, "train.learning_rate must be > 0. Received: train.learning_rate=-0.1"),
        ("train__learning_rate", float("nan"), "train.learning_rate must be a finite number. Received: train.learning_rate=nan"),
        ("train__learning_rate", float("inf"), "train.learning_rate must be a finite number"),
        ("train__seed", -3, "train.seed must be >= 0 and <= 2147483647"),
        ("train__warmup_epochs", -1, "train.warmup_epochs must be >= 0"),
        ("train__steps_per_execution", 0, "train.steps_per_execution must be >= 1"),
        ("train__early_stopping_patience", 0, "train.early_stopping_patience must be >= 1"),
        ("train__weight_decay", -1e-4, "train.weight_decay must be >= 0"),
        ("train__fine_tune", {"epochs": 0}, "train.fine_tune.epochs must be >= 1"),
        ("data__batch_size", 0, "data.batch_size must be >= 1"),
        ("data__modality_dropout", 1.0, r"data.modality_dropout must be >= 0 and < 1"),
        ("model__dropout", 1.5, r"model.dropout must be >= 0 and < 1"),
        ("data__on_error", "ignore", r"data.on_error must be one of \('raise', 'skip'\)"),
        ("data__preprocessing", {"image_sise": [8, 8]},
         r"unknown key\(s\) \['data.preprocessing.image_sise'\]. Valid keys in data.preprocessing: image_size"),
        ("data__preprocessing", {"text_length": 0}, "data.preprocessing.text_length must be a positive int. Received: text_length=0"),
        ("data__preprocessing", {"image_size": [32]}, r"data.preprocessing.image_size must be a pair of positive ints"),
        ("data__preprocessing", {"max_audio_seconds": float("inf")}, "max_audio_seconds must be a positive finite number"),
    ],
)
def test_every_numeric_key_has_a_range(tmp_path, key, value, message):
    path = run_config(tmp_path)
    config = json.loads(path.read_text())
    section, name = key.split("__")
    config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_yaml_nan_and_zero_epochs_are_refused_by_the_cli(tmp_path):
    import yaml

    config = json.loads(run_config(tmp_path).read_text())
    for train_section, expected in (({"epochs": 0}, "train.epochs must be >= 1"),
                                    ({"learning_rate": ".nan"}, "train.learning_rate must be a finite number")):
        text = yaml.safe_dump({**config, "train": {**config["train"], **train_section}}).replace("'.nan'", ".nan")
        (tmp_path / "run.yaml").write_text(text)
        proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "train", "--config", str(tmp_path / "run.yaml")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_naming_epoch_and_step_and_saves_nothing_non_finite(tmp_path):
    path = run_config(tmp_path, train__learning_rate=1e30, train__optimizer="sgd", train__epochs=3)
    with pytest.raises(TrainingDiverged, match=r"The training loss became (nan|inf) at epoch 1, step \d+"):
        train(path, verbose=0)
    run = tmp_path / "run"
    assert not (run / "model.keras").exists()
    if (run / "best.keras").exists():  # an epoch that finished before the divergence
        model = keras.models.load_model(run / "best.keras")
        assert all(np.isfinite(w).all() for w in model.get_weights())


def _kill_after_first_epoch(monkeypatch):
    """Stops training in the middle of epoch 2, after epoch 1's backup: a killed run."""
    original = EpochLog.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(EpochLog, "on_epoch_end", on_epoch_end)


def test_resume_refuses_a_changed_config_or_data_and_restart_discards_the_backup(tmp_path, monkeypatch):
    path = run_config(tmp_path)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train(path, verbose=0)
    assert (run / "backup-stage1" / "training_metadata.json").is_file() and not (run / "model.keras").exists()

    config = load_config(path)

    def changed(section, **values):
        return {**config, section: {**config[section], **values}}

    with pytest.raises(ResumeMismatchError) as info:
        train(changed("train", learning_rate=0.02, seed=5), verbose=0)
    text = str(info.value)
    assert "train.learning_rate: 0.01 (backup) -> 0.02 (now)" in text and "train.seed: 1 (backup) -> 5 (now)" in text
    assert "--restart" in text and str(run / "config.json") in text
    with pytest.raises(ResumeMismatchError, match=r"model.fusion: \"gated\" \(backup\) -> \"concat\" \(now\)"):
        train(changed("model", fusion="concat"), verbose=0)
    manifest = (tmp_path / "train.csv").read_bytes()
    (tmp_path / "train.csv").write_bytes(manifest.replace(b"red", b"blue", 1))
    with pytest.raises(ResumeMismatchError, match=r"data.train \(file content\): \"[0-9a-f]+.* \(backup\) -> \"[0-9a-f]+"):
        train(path, verbose=0)
    (tmp_path / "train.csv").write_bytes(manifest)

    # The same config resumes: every epoch logged once.
    train(path, verbose=0)
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().strip().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]

    # --restart on a killed run trains from scratch.
    with monkeypatch.context() as m:
        _kill_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train(path, verbose=0, output=str(tmp_path / "second"))
    result = train(changed("train", learning_rate=0.02), verbose=0, output=str(tmp_path / "second"), restart=True)
    assert result["history"]["loss"] and len(result["history"]["loss"]) == 3  # all three epochs, not a resume


def test_a_finished_run_or_a_foreign_folder_is_never_overwritten_silently(tmp_path):
    path = run_config(tmp_path, train__epochs=1)
    run = tmp_path / "run"
    train(path, verbose=0)
    (run / "eval-val.json").write_text("{}")  # an evaluation of this run
    with pytest.raises(RunFolderError, match=r"holds a finished run; refusing to overwrite it.*--overwrite"):
        train(path, verbose=0)
    before = (run / "model.keras").stat().st_mtime_ns

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(RunFolderError, match=r"holds files that are not an mbm_keras run \(holiday.jpg\)"):
        train(path, verbose=0, output=str(foreign))
    assert sorted(os.listdir(foreign)) == ["holiday.jpg"]
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "train", "--config", str(path), "--out", str(foreign)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not an mbm_keras run" in proc.stderr

    # --overwrite replaces the folder as a whole: no stale evaluation beside the new model.
    train(path, verbose=0, overwrite=True)
    assert (run / "model.keras").stat().st_mtime_ns != before and not (run / "eval-val.json").exists()
    # ... but never the folder that holds the config or the data.
    with pytest.raises(RunFolderError, match="Refusing to overwrite"):
        train(path, verbose=0, output=str(tmp_path), overwrite=True)
    assert (tmp_path / "train.csv").is_file()
