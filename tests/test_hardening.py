"""Hostile inputs: bad configs, diverging training, run folders that hold
something else, and the resume that must not ignore a changed config."""

import json
import os
import re

import keras
import numpy as np
import pytest
from helpers import blank_png, write_pcm_wav
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

    from helpers import batch

    config = json.loads(run_config(tmp_path).read_text())
    cases = {}
    for train_section, expected in (({"epochs": 0}, "train.epochs must be >= 1"),
                                    ({"learning_rate": ".nan"}, "train.learning_rate must be a finite number")):
        text = yaml.safe_dump({**config, "train": {**config["train"], **train_section}}).replace("'.nan'", ".nan")
        (tmp_path / f"{len(cases)}.yaml").write_text(text)
        cases[expected] = ["train", "--config", str(tmp_path / f"{len(cases)}.yaml")]
    for expected, result in batch(cases, tmp_path).items():  # both in one fresh process (tests/cli_batch.py)
        assert result["code"] == 2 and expected in result["stderr"], result["stderr"][-2000:]
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


@pytest.mark.slow
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


def test_a_finished_run_or_a_foreign_folder_is_never_overwritten_silently(tmp_path, capsys):
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
    from mbm_keras.cli import main

    capsys.readouterr()
    assert main(["train", "--config", str(path), "--out", str(foreign)]) == 2  # the CLI: one line, exit 2
    assert "not an mbm_keras run" in capsys.readouterr().err and sorted(os.listdir(foreign)) == ["holiday.jpg"]

    # --overwrite replaces the folder as a whole: no stale evaluation beside the new model.
    train(path, verbose=0, overwrite=True)
    assert (run / "model.keras").stat().st_mtime_ns != before and not (run / "eval-val.json").exists()
    # ... but never the folder that holds the config or the data.
    with pytest.raises(RunFolderError, match="Refusing to overwrite"):
        train(path, verbose=0, output=str(tmp_path), overwrite=True)
    assert (tmp_path / "train.csv").is_file()


# --- artifacts: a tiny run with every modality, categorical tabular included ---

from test_data import COLUMNS, OPTIONS, make_files, write_csv  # noqa: E402

from mbm_keras.data import DataError, fit_preprocessor, make_dataset  # noqa: E402
from mbm_keras.deploy import Predictor, export_model, predict  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run folder (image + text + audio + age/city tabular, masks on)
    and its SavedModel and float TFLite exports."""
    root = tmp_path_factory.mktemp("hardening")
    rows = make_files(root, n=32)
    write_csv(root / "train.csv", rows[:24])
    write_csv(root / "val.csv", rows[24:])
    config = {
        "data": {"train": str(root / "train.csv"), "val": str(root / "val.csv"), "columns": COLUMNS,
                 "preprocessing": {k: list(v) if isinstance(v, tuple) else v for k, v in OPTIONS.items()},
                 "batch_size": 8, "missing_modalities": True},
        "model": {"image": "small_cnn", "text": "gru", "audio": "logmel_cnn", "tabular": "mlp", "fusion": "concat"},
        # balance none, keep the fusion: the exports' architecture is the same either way (masks are on), and
        # single models would train five times as long (tests/test_validation.py covers them).
        "train": {"epochs": 2, "learning_rate": 0.01, "seed": 0, "balance": "none", "keep_best_of": "fusion"},
        "output": str(root / "run"),
    }
    train(config, verbose=0)
    exports = {
        "saved_model": export_model(str(root / "run"), "saved_model", str(root / "sm"), verbose=False)["out"],
        "tflite": export_model(str(root / "run"), "tflite", str(root / "tfl"), verbose=False)["out"],
    }
    return root, rows, exports


@pytest.fixture(scope="module")
def predictors(run):
    """The run and its two exports, each loaded once (`Predictor`); `predict(path)` is `Predictor(path)(...)`."""
    root, _, exports = run
    return {"keras": Predictor(str(root / "run")), **{kind: Predictor(path) for kind, path in exports.items()}}


def _example(root, row):
    return dict(image=str(root / row["img"]), text=row["caption"], audio=str(root / row["wav"]),
                tabular=[row["age"], row["city"]])


def test_categorical_tabular_exports_to_every_format(run, predictors):
    root, rows, exports = run
    paths = {"keras": str(root / "run"), **exports}
    for i, row in enumerate(rows[24:28]):
        example = _example(root, row)
        answers = {kind: dict(predictor(**example)) for kind, predictor in predictors.items()}
        if i == 0:  # the public call (it loads the artifact each time) answers as the loaded Predictor
            assert {kind: dict(predict(path, **example)) for kind, path in paths.items()} == answers
        expected = answers["keras"]
        for kind in ("saved_model", "tflite"):
            got = answers[kind]
            assert set(got) == set(expected)
            for label, p in expected.items():
                assert abs(got[label] - p) <= 1e-4, (kind, got, expected)
    unseen = dict(_example(root, rows[24]), tabular=["31", "tokyo"])  # an unseen city: the unknown slot
    assert predictors["saved_model"](**unseen)[0][0] == predictors["keras"](**unseen)[0][0]


@pytest.mark.slow
def test_categorical_tabular_exports_to_int8_tflite(run, tmp_path):
    root, rows, _ = run
    int8 = export_model(str(root / "run"), "tflite", str(tmp_path / "int8"), quantize="int8", verbose=False)["out"]
    for row in rows[24:28]:
        example = _example(root, row)
        expected = dict(predict(str(root / "run"), **example))
        assert max(predict(int8, **example), key=lambda kv: kv[1])[0] == max(expected, key=expected.get)


@pytest.mark.parametrize("cell, reason", [
    ("nan", "not a number"), ("inf", "not a number"), ("-Infinity", "not a number"), ("1e39", "finite float32"),
    ("abc", "not a number"), ("1_000", "not a number"),
])
def test_non_finite_or_non_numeric_cells_are_refused_on_every_path(run, predictors, cell, reason):
    from mbm_keras.deploy.reference_tokenizer import TabularEncoder

    root, rows, exports = run
    example = dict(_example(root, rows[24]), tabular=[cell, "paris"])
    for predictor in predictors.values():
        with pytest.raises(ValueError, match=f"tabular column 'age': .*{reason}"):
            predictor(**example)
    with pytest.raises(ValueError, match=f"tabular column 'age': '{cell}' is not a (number|finite float32 number)"):
        TabularEncoder.from_export(os.path.join(exports["tflite"], "model.json"))([cell, "paris"])
    bad = [dict(r) for r in rows[24:]]
    bad[2]["age"] = cell
    path = write_csv(root / "bad.csv", bad)
    from mbm_keras.data import Preprocessor

    pre = Preprocessor.load(str(root / "run"))
    with pytest.raises(DataError, match=r"bad.csv row 3, column 'age': value .* (is not a number|overflows float32)"):
        make_dataset(path, preprocessor=pre, missing_modalities=True)


def test_values_that_overflow_only_after_scaling_are_refused():
    from mbm_keras.codecs.tabular import CellError, TabularEncoder

    encoder = TabularEncoder(["x"], stats={"x": (0.0, 1e-3)})
    assert encoder.encode({"x": "3e30"}) == [pytest.approx(3e33)]
    with pytest.raises(CellError, match="not finite in float32 after scaling"):
        encoder.encode({"x": "3e38"})


def test_reference_tabular_encoder_matches_the_serving_graph(run):
    import tensorflow as tf

    from mbm_keras.data import Preprocessor
    from mbm_keras.codecs.tabular import NUMBER_PATTERN
    from mbm_keras.deploy.raw_inputs import raw_to_inputs
    from mbm_keras.deploy.reference_tokenizer import NUMBER, TabularEncoder

    root, rows, exports = run
    assert NUMBER.pattern == NUMBER_PATTERN  # one definition of a number, copied into the standalone reference
    pre = Preprocessor.load(str(root / "run"))
    reference = TabularEncoder.from_export(os.path.join(exports["tflite"], "model.json"))
    cells = [[r["age"], r["city"]] for r in rows] + [["", "tokyo"], [" 7.5e1 ", ""]]
    graph = raw_to_inputs({"tabular": tf.constant(cells), "image": tf.constant([b""] * len(cells)),
                           "text": tf.constant([""] * len(cells)), "audio": tf.constant([b""] * len(cells))},
                          pre, ["tabular", "image_mask", "text_mask", "audio_mask"])["tabular"].numpy()
    np.testing.assert_allclose(np.array([reference(c) for c in cells]), graph, rtol=1e-6, atol=1e-6)


def test_tabular_cell_count_and_batch_sizes_are_checked(run, predictors):
    import tensorflow as tf

    root, rows, exports = run
    example = _example(root, rows[24])
    for predictor in predictors.values():
        with pytest.raises(ValueError, match=r"takes 2 tabular cell\(s\).*received 3"):
            predictor(**dict(example, tabular=["31", "paris", "extra"]))
        with pytest.raises(ValueError, match=r"takes 2 tabular cell\(s\).*received 1"):
            predictor(**dict(example, tabular=["31"]))
    serve = tf.saved_model.load(exports["saved_model"]).signatures["serving_default"]
    raw = {"image": tf.constant([open(example["image"], "rb").read()] * 2), "text": tf.constant(["a", "b"]),
           "audio": tf.constant([open(example["audio"], "rb").read()] * 2), "tabular": tf.constant([["1", "paris"]])}
    from mbm_keras.codecs.asserts import explain

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serve(**raw)
    assert explain(info.value) == "inputs 'image' and 'tabular' hold different numbers of examples"
    both = dict(raw, tabular=tf.constant([["1", "paris"]] * 2))  # two examples in every input
    for bad, message in ((dict(both, tabular=tf.constant([["1"]] * 2)), "input 'tabular' must hold 2 cells per example"),
                         (dict(both, tabular=tf.constant([["1", "paris", "x"]] * 2)), "input 'tabular' must hold 2 cells")):
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            serve(**bad)
        assert explain(info.value).startswith(message), explain(info.value)



def test_images_above_the_pixel_limit_are_refused_before_decoding(run, predictors, tmp_path):
    root, rows, exports = run
    bomb = blank_png(tmp_path / "bomb.png", 16000, 16000)
    assert os.path.getsize(bomb) < 100_000
    example = dict(_example(root, rows[24]), image=str(bomb))
    for predictor in predictors.values():
        with pytest.raises(ValueError, match=r"image of 16000x16000 pixels is above the limit max_image_pixels=89,478,485"):
            predictor(**example)
    # make_dataset: named with its row, whether found by the header check or while streaming.
    shutil_rows = [dict(r) for r in rows[24:]]
    os.replace(bomb, root / "img" / "bomb.png")
    shutil_rows[1]["img"] = "img/bomb.png"
    path = write_csv(root / "bomb.csv", shutil_rows)
    from mbm_keras.data import Preprocessor

    pre = Preprocessor.load(str(root / "run"))
    with pytest.raises(DataError, match=r"bomb.csv row 2, column 'img' \(.*bomb.png\): image of 16000x16000 pixels"):
        make_dataset(path, preprocessor=pre, missing_modalities=True, verify="header")
    ds = make_dataset(path, preprocessor=pre, missing_modalities=True, verify="none")
    with pytest.raises(Exception) as info:
        list(ds)
    from mbm_keras.codecs.asserts import explain

    assert re.search(r"bomb.csv row 2, column 'img' \(.*bomb.png\): image of 16000x16000 pixels", explain(info.value))
    # The limit is an option: a JPEG over a small limit, found in-graph from its frame header.
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "small.jpg")
    small = Preprocessor(COLUMNS, **{**OPTIONS, "max_image_pixels": 1000}).fit(root / "val.csv")
    from mbm_keras.deploy.raw_inputs import explain, raw_to_inputs
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        raw_to_inputs({"image": tf.constant([open(tmp_path / "small.jpg", "rb").read()]), "text": tf.constant(["a"]),
                       "audio": tf.constant([b""]), "tabular": tf.constant([["1", "paris"]])}, small, ["image", "audio_mask"])
    assert explain(info.value).startswith("image of 40x30 pixels is above the limit max_image_pixels=1,000")


def test_wav_bit_depths_long_audio_and_garbage_audio_give_the_reason(run, predictors, tmp_path):
    root, rows, exports = run
    example = _example(root, rows[24])
    for width in (1, 4):
        wav = write_pcm_wav(tmp_path / f"{8 * width}.wav", width)
        for kind in ("keras", "saved_model"):
            with pytest.raises(ValueError, match=fr"a {8 * width}-bit WAV file \(format tag 1, 1 = PCM, 3 = float\): "
                                                 "only 16-bit PCM WAV is read"):
                predictors[kind](**dict(example, audio=wav))
    from mbm_keras.codecs.audio import wav_info

    assert wav_info(write_pcm_wav(tmp_path / "16.wav", 2)) == (1, 16, 0.1)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"OggS" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="input audio must hold WAV file bytes"):
        predictors["saved_model"](**dict(example, audio=str(garbage)))
    garbage.write_bytes(b"RIFF\xff\xff\xff\xffWAVE" + bytes(range(128, 256)) * 4)
    with pytest.raises(ValueError) as info:
        predictors["saved_model"](**dict(example, audio=str(garbage)))
    assert "\n" not in str(info.value) and "user code" not in str(info.value)
    # Longer than max_audio_seconds: refused naming the duration.
    from mbm_keras.data import Preprocessor

    from mbm_keras.deploy.raw_inputs import explain, raw_to_inputs

    short = Preprocessor(COLUMNS, **{**OPTIONS, "max_audio_seconds": 0.05}).fit(root / "val.csv")
    for verify in ("decode", "header"):  # found from the WAV header, before decoding
        with pytest.raises(DataError, match=r"row 1, column 'wav' \(.*\): audio of 0.1 s is longer than "
                                            r"max_audio_seconds=0.05 \(data.preprocessing.max_audio_seconds\)"):
            make_dataset(root / "val.csv", preprocessor=short, verify=verify)
    with pytest.raises(Exception) as info:  # verify="none": the decoder's own check, while streaming
        list(make_dataset(root / "val.csv", preprocessor=short, verify="none"))
    assert re.search(r"val.csv row 1, column 'wav' \(.*\): audio of 0.1 s is longer than max_audio_seconds=0.05",
                     explain(info.value))
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        raw_to_inputs({"audio": tf.constant([open(example["audio"], "rb").read()]), "image": tf.constant([b""]),
                       "text": tf.constant(["a"]), "tabular": tf.constant([["1", "paris"]])}, short, ["image_mask"])
    assert explain(info.value) == "audio of 0.1 s is longer than max_audio_seconds=0.05 (data.preprocessing.max_audio_seconds)"


@pytest.fixture(scope="module")
def cli_results(run, tmp_path_factory):
    """`mbm-keras predict` on an image that is no image and on a SavedModel with truncated variables, both in
    one fresh process (tests/cli_batch.py)."""
    import shutil

    from helpers import batch

    root, _, exports = run
    folder = tmp_path_factory.mktemp("cli")
    (folder / "x.png").write_bytes(b"not an image at all")
    sm = folder / "sm"
    shutil.copytree(exports["saved_model"], sm)
    for f in (sm / "variables").glob("variables.data*"):
        f.write_bytes(f.read_bytes()[:100])
    cases = {"not_an_image": ["predict", "--model", exports["saved_model"], "--image", folder / "x.png", "--text",
                              "a red thing", "--tabular", "30,paris"],
             "damaged_saved_model": ["predict", "--model", sm, "--text", "x", "--tabular", "30,paris"]}
    return batch(cases, folder), sm


def test_unknown_image_bytes_keep_tensorflows_reason(cli_results):
    result = cli_results[0]["not_an_image"]
    assert result["code"] == 2 and result["traceback"] is None, result
    last = result["stderr"].strip().splitlines()[-1]
    assert last.startswith("mbm-keras predict: error: Unknown image file format. One of JPEG") and last.endswith("required.")


def test_damaged_artifacts_name_the_file_and_the_cause(run, cli_results, tmp_path):
    import shutil
    import zipfile

    root, rows, exports = run
    example = _example(root, rows[24])
    good = (root / "run" / "model.keras").read_bytes()
    cases = {"empty": b"", "random": os.urandom(4096), "truncated": good[: len(good) // 2]}
    for name, content in cases.items():
        folder = tmp_path / name
        shutil.copytree(root / "run", folder, ignore=shutil.ignore_patterns("backup-*", "logs"))
        (folder / "model.keras").write_bytes(content)
        with pytest.raises(ValueError, match=f"{folder / 'model.keras'}: (the file is empty|not a .keras model)"):
            predict(str(folder), **example)
    # Truncated weights inside a valid archive.
    folder = tmp_path / "weights"
    shutil.copytree(root / "run", folder, ignore=shutil.ignore_patterns("backup-*", "logs"))
    with zipfile.ZipFile(root / "run" / "model.keras") as src, zipfile.ZipFile(folder / "model.keras", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data[: len(data) // 3] if item.filename.endswith(".h5") else data)
    with pytest.raises(ValueError, match=f"{folder / 'model.keras'}: cannot load the .keras model"):
        predict(str(folder), **example)
    # Garbage .tflite, SavedModel with truncated variables: one line naming the file.
    tfl = tmp_path / "bad.tflite"
    tfl.write_bytes(os.urandom(2048))
    shutil.copy(os.path.join(exports["tflite"], "preprocessor.json"), tmp_path)
    shutil.copy(os.path.join(exports["tflite"], "vocabulary.txt"), tmp_path)
    with pytest.raises(ValueError, match=f"{tfl}: not a loadable TFLite model"):
        predict(str(tfl), **example)
    results, sm = cli_results  # the SavedModel with truncated variables, through the CLI
    result = results["damaged_saved_model"]
    assert result["code"] == 2 and result["traceback"] is None and "Traceback" not in result["stderr"], result
    assert f"{sm}: cannot load the SavedModel" in result["stderr"].strip().splitlines()[-1]


def test_latin1_manifest_names_the_file_and_the_line(tmp_path):
    from mbm_keras.data import read_manifest

    (tmp_path / "m.csv").write_bytes("image,label\nok.png,a\ncaf\xe9.png,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"m.csv: not UTF-8 text \(byte 0xe9 on line 3\).*iconv -f latin1"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_bytes('{"image": "caf\xe9.png"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"m.jsonl: not UTF-8 text \(byte 0xe9 on line 1\)"):
        read_manifest(tmp_path / "m.jsonl")


def test_an_export_removes_the_temporaries_of_killed_exports(run, tmp_path):
    from mbm_keras.io import TMP_MARKER

    root, rows, exports = run
    dest = tmp_path / "export"
    killed = tmp_path / ".export.tmp-abc123"
    killed.mkdir()
    (killed / TMP_MARKER).write_text("999999999")  # a process that is gone
    (killed / "saved_model.pb").write_bytes(b"half")
    foreign = tmp_path / ".export.tmp-notours"
    foreign.mkdir()
    export_model(str(root / "run"), "saved_model", str(dest), verbose=False)
    assert not killed.exists() and foreign.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.tmp-notours", "export"]
    assert not (dest / TMP_MARKER).exists()


def test_rows_that_fail_while_streaming_are_named_or_skipped(tmp_path, capfd):
    from mbm_keras.codecs.asserts import explain

    rows = make_files(tmp_path, n=12)
    (tmp_path / "img" / "4.png").write_bytes((tmp_path / "img" / "4.png").read_bytes()[:60])  # truncated PNG
    (tmp_path / "wav" / "7.wav").write_bytes((tmp_path / "wav" / "7.wav").read_bytes()[:60])  # header kept, data cut
    path = write_csv(tmp_path / "m.csv", rows)
    pre = fit_preprocessor(path, {"image": "img", "audio": "wav", "label": "label"}, **OPTIONS)
    for verify in ("header", "none"):
        ds = make_dataset(path, preprocessor=pre, verify=verify, batch_size=4)
        with pytest.raises(Exception) as info:
            list(ds)
        assert re.search(r"m.csv row 5, column 'img' \(.*4.png\), column 'wav' \(.*4.wav\): cannot decode the file",
                         explain(info.value)), explain(info.value)
        assert re.search(r"m.csv row 5, column 'img' \(.*4.png\): cannot decode the image file: ",
                         ds.report.explain_failure())  # the decoder's reason, asked from here
    for cache in (None, "memory"):
        ds = make_dataset(path, preprocessor=pre, verify="none", on_error="skip", training=True, batch_size=4, cache=cache)
        for _ in range(2):  # every epoch keeps its length: the epoch's first rows stand in for the bad ones
            labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
            assert len(labels) == 12
        err = capfd.readouterr().err
        assert re.search(r"m.csv row 5, column 'img' \(.*4.png\), column 'wav' .*: cannot decode the file.*\(skipped", err)
        assert re.search(r"m.csv row 8, column 'img' .*, column 'wav' \(.*7.wav\): cannot decode the file.*\(skipped", err)
        assert ds.report["skipped"] == 2 and ds.report["kept"] == 10
        errors = "\n".join(ds.report["errors"])  # decoded again from here: each file's own reason
        assert re.search(r"m.csv row 5, column 'img' \(.*4.png\): cannot decode the image file", errors), errors
        assert re.search(r"m.csv row 8, column 'wav' \(.*7.wav\): cannot decode the audio file", errors), errors
    # Through train(): the fit error becomes a DataError naming the row.
    config = {"data": {"train": path, "columns": {"image": "img", "label": "label"}, "verify": "none",
                       "preprocessing": {"image_size": [16, 16]}, "batch_size": 4},
              "model": {"image": "small_cnn"}, "train": {"epochs": 1}, "output": str(tmp_path / "run")}
    with pytest.raises(DataError, match=r"m.csv row 5, column 'img' \(.*4.png\): cannot decode"):
        train(config, verbose=0)


def test_advice_in_messages_names_options_the_user_has(tmp_path, capsys):
    # Paths outside the data root: the message names the Python argument, the config key and the CLI flag,
    # and each of them exists.
    rows = make_files(tmp_path, n=4)
    (tmp_path / "sub").mkdir()
    path = write_csv(tmp_path / "sub" / "m.csv", [dict(r, img="../" + r["img"]) for r in rows])
    pre = fit_preprocessor(path, {"text": "caption", "label": "label"})
    pre_img = fit_preprocessor(path, {"image": "img", "label": "label"}, image_size=(8, 8))
    with pytest.raises(DataError) as info:
        make_dataset(path, preprocessor=pre_img)
    text = str(info.value)
    assert "allow_outside_root=True (Python)" in text and "data.allow_outside_root: true (run config)" in text
    assert "--allow-outside-root (mbm-keras evaluate/export)" in text
    assert make_dataset(path, preprocessor=pre_img, allow_outside_root=True).report["kept"] == 4
    assert load_config({"data": {"train": path, "columns": {"text": "caption"}, "allow_outside_root": True}})["data"][
        "allow_outside_root"] is True
    from mbm_keras.cli import main

    for command in ("evaluate", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--allow-outside-root" in capsys.readouterr().out
    assert pre.fitted
