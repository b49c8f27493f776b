"""The built-in demo: its data, its export, and the whole run through the CLI."""

import csv
import filecmp
import json
import os
import subprocess
import sys
import wave

import numpy as np
import pytest

from mbm_keras.data import read_manifest
from mbm_keras.demo import write_demo_dataset
from mbm_keras.demo.data import CLASS_NAMES
from mbm_keras.io import EXPORT_MARKER, atomic_output_dir


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("demo") / "data")
    return folder, write_demo_dataset(folder, seed=0)


def _rows(manifest):
    with open(manifest, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_dataset_is_real_files_and_deterministic(demo_data, tmp_path):
    folder, manifest = demo_data
    rows = _rows(manifest)
    assert len(rows) == 800 and {r["split"] for r in rows} == {"train", "val", "test"}
    assert {r["label"] for r in rows} == set(CLASS_NAMES)
    with open(os.path.join(folder, rows[0]["image"]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with wave.open(os.path.join(folder, rows[0]["audio"])) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()) == (1, 8000, 2, 2000)
    again = write_demo_dataset(str(tmp_path / "again"), seed=0)
    assert filecmp.cmp(manifest, again, shallow=False)
    for r in rows[:20]:
        for col in ("image", "audio"):
            assert filecmp.cmp(os.path.join(folder, r[col]), os.path.join(tmp_path, "again", r[col]), shallow=False)
    other = _rows(write_demo_dataset(str(tmp_path / "other"), seed=1))
    assert [r["text"] for r in other[:20]] != [r["text"] for r in rows[:20]]


def test_each_modality_carries_only_its_own_factor(demo_data):
    # Read each factor back from the files with plain numpy: colour from the
    # image, animal word from the text, pitch from the audio. Each agrees with
    # the label about 95% of the time and says nothing about the other factors.
    import tensorflow as tf

    folder, manifest = demo_data
    rows = _rows(manifest)[:200]
    cats = {"cat", "kitten", "tabby", "kitty"}
    agree = {"color": 0, "animal": 0, "pitch": 0}
    for r in rows:
        color, animal, pitch = r["label"].split("-")
        img = tf.io.decode_png(tf.io.read_file(os.path.join(folder, r["image"]))).numpy().astype(float)
        bright = img.sum(axis=2) > 300
        shown_color = "red" if img[bright][:, 0].mean() > img[bright][:, 2].mean() else "blue"
        shown_animal = "cat" if cats & set(r["text"].split()) else "dog"
        with wave.open(os.path.join(folder, r["audio"])) as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
        peak_hz = np.argmax(np.abs(np.fft.rfft(samples))) * 8000 / len(samples)
        shown_pitch = "high" if peak_hz > 700 else "low"
        agree["color"] += shown_color == color
        agree["animal"] += shown_animal == animal
        agree["pitch"] += shown_pitch == pitch
    for factor, n in agree.items():
        assert 0.85 * len(rows) <= n < len(rows), (factor, n)


def test_data_dir_with_foreign_content_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no demo dataset"):
        write_demo_dataset(str(tmp_path))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_failed_export_leaves_previous_export_intact(tmp_path):
    dest = tmp_path / "export"
    with atomic_output_dir(str(dest)) as tmp:
        open(os.path.join(tmp, "model.keras"), "w").write("first")
    assert (dest / EXPORT_MARKER).exists()
    with pytest.raises(RuntimeError):
        with atomic_output_dir(str(dest)) as tmp:
            open(os.path.join(tmp, "model.keras"), "w").write("second, half written")
            raise RuntimeError("crash mid-export")
    assert (dest / "model.keras").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no temporary folder left behind
    with atomic_output_dir(str(dest)) as tmp:
        open(os.path.join(tmp, "model.keras"), "w").write("third")
    assert (dest / "model.keras").read_text() == "third"


def test_export_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an mbm_keras export"):
        with atomic_output_dir(str(tmp_path)):
            pass
    assert (tmp_path / "notes.txt").read_text() == "precious"


@pytest.mark.slow
def test_demo_command_end_to_end(demo_data, tmp_path):
    folder, _ = demo_data
    out = tmp_path / "saved_models" / "demo"
    proc = subprocess.run(
        # 6 epochs instead of the default 12 keeps the suite short; the fusion is far ahead by then.
        [sys.executable, "-m", "mbm_keras.cli", "demo", "--out", str(out), "--data-dir", folder, "--epochs", "6"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in ("fusion (image+text+audio)", "image only", "text only", "audio only", "model.keras  reloaded", "saved_model  reloaded"):
        assert line in proc.stdout
    assert "Epoch 1/6" in proc.stdout  # progress output
    assert {"model.keras", "saved_model", "labels.json", "vocabulary.txt", "metrics.json"} <= set(os.listdir(out))
    metrics = json.loads((out / "metrics.json").read_text())
    fusion = metrics["accuracy"]["fusion (image+text+audio)"]
    singles = [v for k, v in metrics["accuracy"].items() if k.endswith(" only")]
    assert len(singles) == 3 and fusion - max(singles) >= 0.05
    assert fusion > 0.6  # chance is 1/8
    assert all(d <= 1e-5 for d in metrics["export_diffs"].values())
    assert json.loads((out / "labels.json").read_text()) == sorted(CLASS_NAMES)  # the preprocessor sorts labels
    # The exported SavedModel reloads in a fresh process and serves raw files:
    # PNG bytes, text, WAV bytes of three test examples -> their labels.
    rows = [r for r in read_manifest(os.path.join(folder, "manifest.csv")).rows if r["split"] == "test"][:3]
    check = (
        "import json, os, sys, tensorflow as tf;"
        "m = tf.saved_model.load(sys.argv[1]); rows = json.loads(sys.argv[3]);"
        "read = lambda p: open(os.path.join(sys.argv[2], p), 'rb').read();"
        "out = m.signatures['serving_default'](image=tf.constant([read(r['image']) for r in rows]),"
        " text=tf.constant([r['text'] for r in rows]), audio=tf.constant([read(r['audio']) for r in rows]));"
        "print(json.dumps([list(out['probabilities'].shape), [x.decode() for x in out['label'].numpy()]]))"
    )
    fresh = subprocess.run([sys.executable, "-c", check, str(out / "saved_model"), folder, json.dumps(rows)],
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    shape, labels = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert shape == [3, 8] and sum(a == r["label"] for a, r in zip(labels, rows)) >= 2


def test_demo_rejects_bad_arguments(tmp_path):
    from helpers import batch

    (tmp_path / "keep.txt").write_text("x")
    results = batch({"epochs": ["demo", "--epochs", "0"], "folder": ["demo", "--data-dir", str(tmp_path), "--quiet"]},
                    tmp_path)
    assert results["epochs"]["code"] == 2
    assert "argument --epochs: must be a whole number >= 1. Received: 0" in results["epochs"]["stderr"]
    assert results["folder"]["code"] == 2 and "holds no demo dataset" in results["folder"]["stderr"]
