"""Deployment: raw-input SavedModel, builtin-ops TFLite (float/float16/dynamic/int8), predict.

A small image + LSTM text + audio model is trained once (with `train()`, masks on)
on the built-in demo data; every artifact is loaded in its real runtime
(`tf.saved_model.load`, `saved_model_cli` in a fresh process, `ai_edge_litert`, `onnxruntime`)
and compared with Keras on the held-out split.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, tiny_inputs

from mbm_keras import build_fusion_model, list_encoders, list_fusions
from mbm_keras.data import read_manifest, write_manifest
from mbm_keras.demo import write_demo_dataset
from mbm_keras.deploy import (
    TFLiteExportError,
    convert_to_tflite,
    export_model,
    load_run_model,
    predict,
    run_tflite,
    tflite_interpreter,
)
from mbm_keras.deploy.exporting import example_inputs
from mbm_keras.deploy.reference_tokenizer import Tokenizer
from mbm_keras.training import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run folder and the demo data's test manifest."""
    root = tmp_path_factory.mktemp("deploy")
    manifest = read_manifest(write_demo_dataset(str(root / "data"), seed=0))
    paths = {}
    for split in ("train", "val", "test"):
        subset = manifest.subset([i for i, r in enumerate(manifest.rows) if r["split"] == split])
        paths[split] = str(root / f"{split}.csv")
        write_manifest(subset, paths[split])
    config = {
        "data": {
            "train": paths["train"], "val": paths["val"],
            "columns": {"image": "image", "text": "text", "audio": "audio", "label": "label"},
            "preprocessing": {"image_size": [32, 32], "text_length": 8, "sample_rate": 8000, "audio_length": 2000},
            "batch_size": 32, "missing_modalities": True, "modality_dropout": 0.2,
        },
        # Sizes where the weights, not the graph, make most of the file (as in
        # real models), so the int8 size ratio means something.
        "model": {"image": "small_cnn", "text": "lstm", "audio": "logmel_cnn", "fusion": "concat",
                  "image_kwargs": {"filters": [32, 64, 256]}, "text_kwargs": {"units": 128},
                  "fusion_kwargs": {"units": 1024}},
        # balance none, keep the fusion: exports depend on the architecture, which balance leaves as it is (masks
        # are on here), and the fused model is the one exported (tests/test_validation.py compares it with the
        # single models).
        "train": {"epochs": 6, "learning_rate": 0.003, "seed": 0, "balance": "none", "keep_best_of": "fusion"},
        "output": str(root / "run"),
    }
    result = train(config, verbose=0)
    assert result["history"]["val_accuracy"][-1] > 0.5
    return result["output"], paths["test"]


def _raw_rows(test_manifest, n=None):
    manifest = read_manifest(test_manifest)
    root = os.path.dirname(manifest.path)
    rows = manifest.rows[:n] if n else manifest.rows

    def read(p):
        with open(os.path.join(root, p), "rb") as f:
            return f.read()

    return {
        "image": [read(r["image"]) for r in rows],
        "text": [r["text"] for r in rows],
        "audio": [read(r["audio"]) for r in rows],
    }, [os.path.join(root, r["image"]) for r in rows], [os.path.join(root, r["audio"]) for r in rows], rows


@pytest.fixture(scope="module")
def saved_model(run, tmp_path_factory):
    """The run's SavedModel, checked against Keras on 16 test examples by export_model."""
    folder, test_manifest = run
    return export_model(folder, "saved_model", str(tmp_path_factory.mktemp("saved_model") / "served"),
                        data=test_manifest, num_examples=16, verbose=False)


def test_saved_model_serves_raw_files_like_keras(run, saved_model):
    folder, test_manifest = run
    model, pre = load_run_model(folder)
    result = saved_model
    assert result["check"]["max_abs_diff"] <= 1e-5  # serve_tensors vs Keras
    raw, _, _, rows = _raw_rows(test_manifest, 12)
    raw["image"][3] = b""  # example 3 arrives without its image
    # The signature as TF Serving runs it (in this process; a fresh one without mbm_keras: saved_model_cli, slow).
    out = tf.saved_model.load(result["out"]).signatures["serving_default"](**{k: tf.constant(v) for k, v in raw.items()})
    served = out["probabilities"].numpy()
    x = example_inputs(model, pre, test_manifest, 12)
    x["image"][3] = 0
    x["image_mask"][3] = 0
    expected = model.predict(x, verbose=0)
    assert served.shape == (12, len(pre.labels.classes))
    np.testing.assert_allclose(served, expected, atol=1e-5)
    labels = [x.decode() for x in out["label"].numpy()]
    # Every output holds one row per example: TF Serving's row format ("instances") refuses any other.
    assert {k: v.shape[0] for k, v in out.items()} == dict.fromkeys(["probabilities", "label", "score", "classes"], 12)
    assert [c.decode() for c in out["classes"].numpy()[5]] == [str(c) for c in pre.labels.classes]
    assert labels == [pre.labels.classes[i] for i in expected.argmax(1)]
    assert np.mean([a == r["label"] for a, r in zip(labels, rows)]) > 0.5


@pytest.mark.slow  # TensorFlow's saved_model_cli in a subprocess; test-fast serves the signature in-process above
def test_saved_model_cli_runs_the_raw_signature(run, tmp_path):
    folder, test_manifest = run
    model, pre = load_run_model(folder)
    out = export_model(folder, "saved_model", str(tmp_path / "served"), verbose=False)["out"]
    raw, _, _, _ = _raw_rows(test_manifest, 2)
    for k, v in raw.items():
        np.save(tmp_path / f"{k}.npy", np.array([s.encode() if isinstance(s, str) else s for s in v], dtype=bytes))
    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or "saved_model_cli"
    proc = subprocess.run(
        [cli, "run", "--dir", out, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", ";".join(f"{k}={tmp_path / k}.npy" for k in raw), "--outdir", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = model.predict(example_inputs(model, pre, test_manifest, 2), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "cli" / "probabilities.npy"), expected, atol=1e-5)


def test_wrong_inputs_to_the_signatures_give_clear_errors(run, saved_model):
    folder, test_manifest = run
    loaded = tf.saved_model.load(saved_model["out"])
    raw, _, _, _ = _raw_rows(test_manifest, 1)
    good = {k: tf.constant(v) for k, v in raw.items()}
    # The restored endpoint function names the input, what it got and what it expects.
    with pytest.raises(TypeError, match=r"Can not cast TensorSpec\(shape=\(1, 32, 32, 3\), dtype=tf.float32, name='image'\) "
                                        r"to TensorSpec\(shape=\(None,\), dtype=tf.string, name='image'\)"):
        loaded.serving_default({**good, "image": tf.zeros([1, 32, 32, 3])})  # wrong dtype
    with pytest.raises(TypeError, match=r"Can not cast TensorSpec\(shape=\(1, 2\), dtype=tf.string, name='text'\) "
                                        r"to TensorSpec\(shape=\(None,\), dtype=tf.string, name='text'\)"):
        loaded.serving_default({**good, "text": tf.constant([["a", "b"]])})  # wrong rank
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a string tensor but is a float tensor"):
        serve(**{**good, "image": tf.zeros([1, 32, 32, 3])})  # the signature (TF Serving's view): input # only
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        serve(**{**good, "image": tf.constant([b"not an image"])})
    with pytest.raises(tf.errors.InvalidArgumentError, match="input audio must hold WAV file bytes"):
        serve(**{**good, "audio": tf.constant([b"OggS...."])})


@pytest.fixture(scope="module")
def tflite_exports(run, tmp_path_factory):
    """The float conversions (in this process); int8's, in a child process, is tested alone (slow)."""
    folder, test_manifest = run
    root = tmp_path_factory.mktemp("tflite")
    return {
        q: export_model(folder, "tflite", str(root / q), quantize=q, data=test_manifest, num_examples=200, verbose=False)
        for q in ("none", "float16", "dynamic")
    }


def _tflite_agreement(run, exports):
    """{quantize: (largest difference from Keras, top-1 agreement)} on up to 200 test examples, and their count."""
    folder, test_manifest = run
    model, pre = load_run_model(folder)
    x = example_inputs(model, pre, test_manifest, 200)
    expected = model.predict(x, verbose=0)
    results = {}
    for q, export in exports.items():
        got = run_tflite(tflite_interpreter(os.path.join(export["out"], "model.tflite")), x)
        results[q] = (float(np.abs(got - expected).max()), float(np.mean(got.argmax(1) == expected.argmax(1))))
        assert export["check"]["examples"] == len(expected)
    return results, len(expected)


def test_tflite_float_matches_keras_and_quantized_agree(run, tflite_exports):
    results, n = _tflite_agreement(run, tflite_exports)
    assert n >= 100
    assert results["none"][0] <= 1e-4, results
    assert results["float16"][1] >= 0.99 and results["dynamic"][1] >= 0.99, results
    sizes = {q: e["bytes"] for q, e in tflite_exports.items()}
    assert sizes["float16"] <= 0.55 * sizes["none"] and sizes["dynamic"] <= 0.35 * sizes["none"], sizes


@pytest.mark.slow  # int8 converts in a child process (TF 2.21 can crash on it: the test below)
def test_tflite_int8_agrees_and_is_under_a_third_of_the_size(run, tflite_exports, tmp_path):
    folder, test_manifest = run
    int8 = export_model(folder, "tflite", str(tmp_path / "int8"), quantize="int8", data=test_manifest,
                        num_examples=200, verbose=False)
    results, _ = _tflite_agreement(run, {"int8": int8})
    assert results["int8"][1] >= 0.97, results  # an LSTM text branch, full-integer quantized
    assert int8["bytes"] <= 0.3 * tflite_exports["none"]["bytes"], (int8["bytes"], tflite_exports["none"]["bytes"])
    side = json.loads((tmp_path / "int8" / "model.json").read_text(encoding="utf-8"))
    assert side["quantize"] == "int8" and side["inputs"]["text"] == {"shape": [1, 8], "dtype": "int32"}


def test_tflite_sidecar_vocabulary_and_reference_tokenizer(run, tflite_exports):
    folder, _ = run
    _, pre = load_run_model(folder)
    out = tflite_exports["dynamic"]["out"]
    assert {"model.tflite", "model.json", "vocabulary.txt", "tokenizer.py", "preprocessor.json"} <= set(os.listdir(out))
    side = json.loads(open(os.path.join(out, "model.json"), encoding="utf-8").read())
    assert side["labels"] == pre.labels.classes and side["quantize"] == "dynamic" and side["batch_size"] == 1
    assert side["inputs"]["image"] == {"shape": [1, 32, 32, 3], "dtype": "float32"}
    assert side["inputs"]["text"] == {"shape": [1, 8], "dtype": "int32"}
    assert side["inputs"]["audio"] == {"shape": [1, 2000], "dtype": "float32"}
    assert side["preprocessing"]["audio"]["sample_rate"] == 8000 and side["preprocessing"]["image"]["size"] == [32, 32]
    # The reference tokenizer shipped beside the model reproduces the training tokenizer.
    reference = Tokenizer.from_export(os.path.join(out, "model.json"))
    texts = ["A small RED dog, barking!", "一只猫", "unknown words here", ""]
    assert [reference(t) for t in texts] == pre.tokenizer(tf.constant(texts)).numpy().tolist()


@pytest.mark.slow  # subprocesses of the CLI (each imports TensorFlow): make test runs it
def test_predict_gives_the_same_answer_from_every_artifact(run, tflite_exports, tmp_path):
    folder, test_manifest = run
    saved = export_model(folder, "saved_model", str(tmp_path / "served"), verbose=False)["out"]
    os.remove(os.path.join(saved, "preprocessor.json"))  # the SavedModel alone names its classes
    raw, images, audios, rows = _raw_rows(test_manifest, 1)
    answers = {}
    for name, path in {"keras": folder, "saved_model": saved,
                       "tflite": os.path.join(tflite_exports["none"]["out"], "model.tflite")}.items():
        answers[name] = predict(path, image=images[0], text=rows[0]["text"], audio=audios[0], top=3)
    assert [c for c, _ in answers["keras"]] == [c for c, _ in answers["saved_model"]] == [c for c, _ in answers["tflite"]]
    np.testing.assert_allclose([p for _, p in answers["keras"]], [p for _, p in answers["tflite"]], atol=1e-4)
    proc = subprocess.run(
        [sys.executable, "-m", "mbm_keras.cli", "predict", "--model", saved, "--image", images[0], "--text", rows[0]["text"]],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.strip().splitlines()) == 3  # audio missing: the model has masks
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "predict", "--model", saved, "--image", "nope.png"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Image file not found: nope.png" in proc.stderr


@pytest.mark.slow  # subprocesses of the CLI (each imports TensorFlow): make test runs it
def test_cli_export_and_its_errors(run, tmp_path):
    folder, test_manifest = run
    cmd = [sys.executable, "-m", "mbm_keras.cli", "export", "--model", folder]
    proc = subprocess.run(cmd + ["--format", "tflite", "--quantize", "dynamic", "--out", str(tmp_path / "e"),
                                 "--data", test_manifest, "--examples", "20"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Checked against Keras on 20 examples" in proc.stdout and "top-1 agreement" in proc.stdout
    proc = subprocess.run(cmd + ["--format", "saved_model", "--quantize", "int8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "quantize applies to TFLite only" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "export", "--model", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "No model.keras in" in proc.stderr


def test_failed_export_keeps_the_previous_one(run, tflite_exports, tmp_path, monkeypatch):
    # A converter that dies from a signal (as TF 2.21's int8 converter does on
    # some LSTM graphs) raises in the caller; the earlier export stays intact.
    folder, test_manifest = run
    out = tmp_path / "e"
    shutil.copytree(tflite_exports["none"]["out"], out)  # an earlier export of this run
    before = (out / "model.tflite").read_bytes()
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crash.chmod(0o755)
    monkeypatch.setattr("mbm_keras.deploy.tflite.sys.executable", str(crash))
    with pytest.raises(TFLiteExportError, match=r"crashed \(signal 11\) for quantize='int8'. Try quantize='dynamic'"):
        export_model(folder, "tflite", str(out), quantize="int8", data=test_manifest, num_examples=8, verbose=False)
    assert (out / "model.tflite").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".e.")] == []  # no temp folder left


@pytest.mark.slow
def test_int8_bilstm_on_texts_shorter_than_text_length_loads_and_agrees(tmp_path):
    # The case that failed (issue 17): small_cnn + bilstm + concat, 32x32, text_length 8, 2 epochs on
    # 48 rows whose texts are all shorter than 8 tokens. The backward LSTM's first steps only saw
    # padding in calibration; their zero ranges made XNNPACK refuse the model ("failed to prepare").
    manifest = read_manifest(write_demo_dataset(str(tmp_path / "data"), seed=0)).subset(range(48))
    for row in manifest.rows:
        row["text"] = " ".join(row["text"].split()[:3])
    path = write_manifest(manifest, str(tmp_path / "short.csv"))
    config = {"data": {"train": path, "columns": {"image": "image", "text": "text", "label": "label"},
                       "preprocessing": {"image_size": [32, 32], "text_length": 8}},
              "model": {"image": "small_cnn", "text": "bilstm", "fusion": "concat"},
              "train": {"epochs": 2, "balance": "none"}, "output": str(tmp_path / "run")}
    train(config, verbose=0)
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "export", "--model", str(tmp_path / "run"),
                           "--format", "tflite", "--quantize", "int8", "--data", path, "--out", str(tmp_path / "int8")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = re.search(r"max \|diff\| ([0-9.e-]+), top-1 agreement ([0-9.]+)%", proc.stdout)
    assert float(check.group(1)) < 0.02 and float(check.group(2)) >= 95, proc.stdout
    # A text as long as text_length (never seen in the training data) still agrees with Keras.
    model, pre = load_run_model(str(tmp_path / "run"))
    x = example_inputs(model, pre, path, 8)
    x["text"] = np.resize(x["text"][x["text"] > 0], x["text"].shape).astype(np.int32)
    got = run_tflite(tflite_interpreter(str(tmp_path / "int8" / "model.tflite")), x)
    assert np.abs(got - model.predict(x, verbose=0)).max() < 0.05


def test_int8_calibration_covers_every_recurrent_step():
    from mbm_keras.deploy.tflite import cover_every_step

    inputs = {"text": keras.Input((6,), dtype="int32", name="text"), "image": keras.Input((2,), name="image")}
    model = keras.Model(inputs, keras.layers.Concatenate()([keras.ops.cast(inputs["text"], "float32"), inputs["image"]]))
    examples = [{"text": np.array([5, 7, 0, 0, 0, 0], np.int32), "image": np.ones(2, np.float32)},
                {"text": np.array([3, 4, 5, 6, 7, 8], np.int32), "image": np.zeros(2, np.float32)},
                {"text": np.zeros(6, np.int32), "image": np.zeros(2, np.float32)}]
    covered = cover_every_step(model, examples)
    assert len(covered) == 4 and covered[:3] == examples
    assert covered[3]["text"].tolist() == [5, 7, 5, 7, 5, 7] and covered[3]["text"].dtype == np.int32
    assert covered[3]["image"] is examples[0]["image"]


# --- ONNX ---

@pytest.mark.slow  # tf2onnx in a child process (TensorFlow's start-up); test-fast converts in the test below
def test_onnx_export_matches_keras_and_predicts(run, tmp_path, capsys):
    from mbm_keras.deploy.onnx import onnx_session, run_onnx

    folder, test_manifest = run
    result = export_model(folder, "onnx", str(tmp_path / "onnx"), data=test_manifest, num_examples=40, verbose=False)
    assert result["check"]["max_abs_diff"] <= 1e-4 and result["check"]["top1_agreement"] == 1.0
    sidecar = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert sidecar["format"] == "onnx" and sidecar["inputs"]["image"]["shape"] == [None, 32, 32, 3]
    assert {"image", "text", "audio", "image_mask"} <= set(sidecar["inputs"])
    # The batch axis is dynamic: one call on 7 examples equals Keras.
    model, pre = load_run_model(folder)
    x = example_inputs(model, pre, test_manifest, 7)
    session = onnx_session(str(tmp_path / "onnx" / "model.onnx"))
    np.testing.assert_allclose(run_onnx(session, x), model.predict(x, verbose=0), atol=1e-4)
    raw, images, audios, rows = _raw_rows(test_manifest, 1)
    keras_answer = predict(folder, image=images[0], text=rows[0]["text"], audio=audios[0], top=3)
    onnx_answer = predict(str(tmp_path / "onnx" / "model.onnx"), image=images[0], text=rows[0]["text"],
                          audio=audios[0], top=3)
    assert [c for c, _ in keras_answer] == [c for c, _ in onnx_answer]
    np.testing.assert_allclose([p for _, p in keras_answer], [p for _, p in onnx_answer], atol=1e-4)
    from mbm_keras.cli import main  # the CLI on the export folder (CLI subprocesses: the slow tests above)

    assert main(["predict", "--model", str(tmp_path / "onnx"), "--image", images[0], "--text", rows[0]["text"]]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


@keras.saving.register_keras_serializable(package="tests")
class _Bucketize(keras.layers.Layer):
    """keras.ops.searchsorted: TensorFlow's LowerBound op, which tf2onnx does not convert."""

    def call(self, x):
        return keras.ops.cast(keras.ops.searchsorted(keras.ops.convert_to_tensor([0.1, 0.5, 0.9]), x), "float32")


def test_onnx_export_names_the_op_it_cannot_convert(tmp_path):
    from mbm_keras.deploy.onnx import OnnxExportError, convert_to_onnx

    inputs = keras.Input((4,), name="tabular")
    model = keras.Model(inputs, keras.layers.Dense(2)(_Bucketize()(inputs)), name="bucketed")
    with pytest.raises(OnnxExportError, match=r"tf2onnx cannot convert op\(s\) LowerBound \(opset 17\) in bucketed"):
        convert_to_onnx(model, str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


def _check_onnx(model, tmp_path, modalities):
    from mbm_keras.deploy.onnx import convert_to_onnx, onnx_session, run_onnx

    x = tiny_inputs(modalities, batch=3)
    path = convert_to_onnx(model, str(tmp_path / "m.onnx"))
    return run_onnx(onnx_session(path), x), model.predict(x, verbose=0)


# --- every encoder and fusion of the zoo converts to builtin-op TFLite (and to ONNX) ---

from mbm_keras.modalities import list_modalities  # noqa: E402

def _check_tflite(model, tmp_path, modalities, quantize="none"):
    x = tiny_inputs(modalities, batch=3)
    expected = model.predict(x, verbose=0)
    rep = [{k: v[i] for k, v in tiny_inputs(modalities, batch=8, seed=1).items()} for i in range(8)]
    path = convert_to_tflite(model, str(tmp_path / "m.tflite"), quantize, representative=rep)
    return run_tflite(tflite_interpreter(path), x), expected


def _zoo_groups():
    """Every encoder and every fusion, in as few 4-modality models as cover them
    all (a conversion costs seconds of fixed overhead)."""
    encoders = {m: list_encoders(m) for m in list_modalities()}
    fusions = list_fusions()
    count = max(len(fusions), *(len(v) for v in encoders.values()))
    return [({m: names[i % len(names)] for m, names in encoders.items()}, fusions[i % len(fusions)]) for i in range(count)]


def _zoo_params():
    """The zoo groups; `make test` converts them all, `make test-fast` only
    the group of the small image encoder (the others build keras.applications
    backbones or sequence fusions, 10-30 s each)."""
    return [pytest.param(e, f) if e["image"] == "small_cnn" else pytest.param(e, f, marks=pytest.mark.slow)
            for e, f in _zoo_groups()]


@pytest.mark.parametrize("encoders,fusion", _zoo_params(), ids=lambda v: "+".join(v.values()) if isinstance(v, dict) else v)
def test_every_encoder_and_fusion_converts_to_builtin_tflite(encoders, fusion, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_fusion_model(**encoders, fusion=fusion, num_classes=3, **TINY, compile=False)
    got, expected = _check_tflite(model, tmp_path, list(encoders))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def _onnx_params():
    """The zoo groups, all converted by `make test` (`make test-fast` converts
    the trained model of `test_onnx_export_matches_keras_and_predicts`)."""
    return [pytest.param(e, f, marks=pytest.mark.slow) for e, f in _zoo_groups()]


@pytest.mark.parametrize("encoders,fusion", _onnx_params(), ids=lambda v: "+".join(v.values()) if isinstance(v, dict) else v)
def test_every_encoder_and_fusion_converts_to_onnx(encoders, fusion, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_fusion_model(**encoders, fusion=fusion, num_classes=3, **TINY, compile=False)
    got, expected = _check_onnx(model, tmp_path, list(encoders))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_zoo_groups_cover_everything():
    groups = _zoo_groups()
    for m in list_modalities():
        assert {g[0][m] for g in groups} == set(list_encoders(m))
    assert {g[1] for g in groups} == set(list_fusions())


# int8 for the encoders the trained model above (small_cnn, lstm, logmel_cnn) does not
# cover, so `mbm-keras zoo`'s tflite column holds for each. ResNet50 and MobileNetV3-Small
# int8 take minutes to convert; benchmarks/inference.py converts and runs them.
INT8_GROUPS = [
    {"image": "vgg16", "text": "bilstm", "audio": "logmel_lstm", "tabular": "mlp"},
    {"image": "efficientnet_b0", "text": "cnn", "timeseries": "conv1d"},
    {"image": "small_cnn", "text": "gru", "audio": "logmel_tcn"},
    {"timeseries": "series_gru", "tabular": "mlp", "text": "keras_hub", "image": "keras_hub_image"},
]
INT8_ELSEWHERE = {"small_cnn", "lstm", "logmel_cnn", "resnet50", "mobilenet_v3_small"}


@pytest.mark.slow
@pytest.mark.parametrize("encoders", INT8_GROUPS, ids=lambda g: "+".join(g.values()))
def test_every_encoder_quantizes_to_int8(encoders, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_fusion_model(**encoders, num_classes=3, **TINY, compile=False)
    got, expected = _check_tflite(model, tmp_path, list(encoders), quantize="int8")
    assert np.abs(got - expected).max() < 0.05


def test_int8_groups_cover_every_encoder():
    covered = {name for g in INT8_GROUPS for name in g.values()} | INT8_ELSEWHERE
    assert covered == {n for m in list_modalities() for n in list_encoders(m)}


@pytest.mark.parametrize("kind", ["word", "character", "wordpiece"])
def test_reference_tokenizer_reproduces_each_training_tokenizer(kind):
    from mbm_keras.codecs.text import TextTokenizer

    train_texts = ["A red CAT, sits!", "一只猫在睡觉。", "Ünïcode café naïve", "tabs\tand\nnewlines", "ไทย ภาษา",
                   "カタカナ ひらがな", "x-ray e-mail 3.14", "running runners run quickly", "the cats were sitting"] * 3
    texts = train_texts[:9] + ["unknown WORDS here", "猫猫狗", "", "  spaces   ", "CAFÉ Ünïcode", "runs sitting catnap"]
    tokenizer = TextTokenizer(kind, length=12, max_tokens=200).fit(train_texts)
    reference = Tokenizer(tokenizer.vocabulary, kind, 12)
    assert [reference(t) for t in texts] == tokenizer(tf.constant(texts)).numpy().tolist()
    assert any(1 in reference(t) for t in texts)  # unknown tokens do occur
