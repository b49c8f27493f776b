"""Validation by default (data.val_split, data.group), the epoch and the model a run keeps,
the probe balance, and evaluation that counts each row once."""

import json

import keras
import numpy as np
import pytest
from test_data import make_files, write_csv

from mbm_keras.data import read_manifest
from mbm_keras.data.manifest import DataError
from mbm_keras.training import ConfigError, train
from mbm_keras.training.holdout import MIN_VAL_ROWS, hold_out

COLUMNS = {"image": "img", "text": "caption", "label": "label"}


def manifest(folder, n=60, speakers=6):
    rows = make_files(folder, n=n)
    for i, row in enumerate(rows):
        row["speaker"] = f"s{i % speakers}"
    return write_csv(folder / "train.csv", rows), rows


def data_section(path, **overrides):
    return {"train": str(path), "val": None, "val_split": 0.2, "group": None, **overrides}


def test_hold_out_is_stratified_recorded_and_reproducible(tmp_path):
    path, rows = manifest(tmp_path)
    held = hold_out(data_section(path), str(tmp_path / "run"), seed=0, label="label")
    train_rows, val_rows = held.train, held.val
    assert len(val_rows) == 12 and len(train_rows) == 48
    # Stratified: each class keeps its share on both sides.
    assert sorted(val_rows.column("label")) == ["blue"] * 6 + ["red"] * 6
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    numbers = split["rows (1-based)"]
    assert sorted(numbers["train"] + numbers["val"]) == list(range(1, 61))  # every row once, on one side
    assert [rows[n - 1]["caption"] for n in numbers["val"]] == list(val_rows.column("caption"))
    assert "holding out 12 of 60 rows" in held.note and "stratified by 'label'" in held.note
    assert held.summary["source"] == "data.val_split" and held.summary["rows"] == {"train": 48, "val": 12}
    # The same seed gives the same split; another seed another one.
    again = hold_out(data_section(path), str(tmp_path / "again"), seed=0, label="label")
    assert list(again.val.numbers) == list(val_rows.numbers)
    other = hold_out(data_section(path), str(tmp_path / "other"), seed=1, label="label")
    assert list(other.val.numbers) != list(val_rows.numbers)


def test_a_grouped_hold_out_keeps_each_group_on_one_side(tmp_path):
    path, _ = manifest(tmp_path, n=60, speakers=6)
    held = hold_out(data_section(path, group="speaker"), str(tmp_path / "run"), seed=0, label="label")
    val_speakers, train_speakers = set(held.val.column("speaker")), set(held.train.column("speaker"))
    assert val_speakers and not val_speakers & train_speakers
    assert len(val_speakers) == 1 and len(held.val) == 10  # 0.2 of 6 speakers rounds to one, its 10 rows
    assert "grouped by 'speaker': 1 of 6 groups" in held.note


def test_nothing_is_held_out_without_enough_rows_and_the_run_says_why(tmp_path):
    path, _ = manifest(tmp_path, n=30)
    held = hold_out(data_section(path), str(tmp_path / "run"), seed=0, label="label")
    assert held.val is None and str(held.train) == str(path)
    assert f"too few to hold out 0.2 of them (at least {MIN_VAL_ROWS} rows)" in held.note
    held = hold_out(data_section(path, val_split=0.0), str(tmp_path / "run"), seed=0, label="label")
    assert held.val is None and "data.val_split is 0" in held.note
    held = hold_out(data_section(path, val="val.csv"), str(tmp_path / "run"), seed=0, label="label")
    assert held.val == "val.csv" and held.summary["source"] == "data.val"
    with pytest.raises(ConfigError, match=r"data.group 'speakers' is not a column of .*train.csv \(its columns: "):
        hold_out(data_section(path, group="speakers"), str(tmp_path / "run"), seed=0, label="label")
    # Grouped by the label itself: every held-out class is missing from training, and the run says that.
    three = write_csv(tmp_path / "three.csv", [dict(r, label=("red", "blue", "green")[i % 3])
                                                for i, r in enumerate(make_files(tmp_path, n=60))])
    held = hold_out(data_section(three, group="label"), str(tmp_path / "run"), seed=0, label="label")
    assert held.val is None and "every held-out row's class is absent from the training side (20 rows)" in held.note
    with pytest.raises(ConfigError, match=r"data.group 'label' holds one value only"):
        write_csv(tmp_path / "one.csv", [dict(r, label="red") for r in make_files(tmp_path, n=60)])
        hold_out(data_section(tmp_path / "one.csv", group="label"), str(tmp_path / "run"), seed=0, label="label")


def test_a_subset_names_rows_by_their_number_in_the_file(tmp_path):
    from mbm_keras.data import fit_preprocessor, make_dataset

    rows = make_files(tmp_path, n=12)
    rows[7]["img"] = "img/missing.png"
    path = write_csv(tmp_path / "m.csv", rows)
    subset = read_manifest(str(path)).subset([1, 3, 7])
    assert subset.where(2) == f"{path} row 8"
    pre = fit_preprocessor(read_manifest(str(path)).subset([0, 1, 2]), {"image": "img", "label": "label"},
                           image_size=(8, 8))
    with pytest.raises(DataError, match=r"m.csv row 8, column 'img'"):
        make_dataset(subset, preprocessor=pre, verify="header")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """image + text on 60 rows, every balance and keep key left to its default, no data.val; with the text
    encoder's weights seen between the probe and the fine-tuning (`trainer._restore_best`, called there)."""
    from mbm_keras.training import trainer

    folder = tmp_path_factory.mktemp("default")
    path, _ = manifest(folder)
    config = {"data": {"train": str(path), "columns": COLUMNS, "batch_size": 8,
                       "preprocessing": {"image_size": [16, 16], "text_length": 6, "max_tokens": 100}},
              "model": {"image": "small_cnn", "text": "cnn", "fusion": "concat"},
              "train": {"epochs": 3, "learning_rate": 0.01, "seed": 1},
              "output": str(folder / "run")}
    seen, original = {}, trainer._restore_best

    def spy(model, out):  # called between the probe and the fine-tuning
        original(model, out)
        seen.setdefault("text", [keras.ops.convert_to_numpy(w) for w in model.get_layer("text_encoder").weights])

    trainer._restore_best = spy
    try:
        result = train(config, verbose=0)
    finally:
        trainer._restore_best = original
    return folder, result, seen


def test_the_default_holds_out_validation_and_keeps_the_best_part(default_run, capsys):
    folder, result, _ = default_run
    run = folder / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["source"] == "data.val_split" and (run / "split.json").is_file()
    assert summary["balance"] == "probe" and summary["keep_best_of"] == "all"
    assert set(summary["singles"]) == {"image", "text"} and summary["fusion"] is not None
    # The probe (3 epochs, encoders frozen) and the fine-tuning (half as many: 1) are one history.
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 4 and len(result["history"]["loss"]) == 4
    # model.keras is the best validation epoch, and the epoch is said.
    epoch = summary["epoch"]
    assert epoch["monitor"] == "val_loss" and 1 <= epoch["kept"] <= 4 and epoch["of"] == 4
    assert epoch["value"] == pytest.approx(min(float(r.split(",")[list(history[0].split(",")).index("val_loss")])
                                               for r in history[1:]), rel=1e-5)
    kept = keras.saving.load_model(run / "model.keras", safe_mode=True)
    best = keras.saving.load_model(run / "best.keras", safe_mode=True)
    for a, b in zip(kept.weights, best.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # The kept model is never below its best part on validation.
    scores = {**summary["singles"], "fusion": summary["fusion"]}
    kept_name = summary.get("kept_modality") or "fusion"
    assert scores[kept_name] == max(scores.values())


def test_the_probe_starts_the_fusion_from_frozen_single_encoders(default_run):
    """After the probe epochs the encoders still hold the single models' weights exactly."""
    folder, _, seen = default_run
    single = keras.saving.load_model(folder / "run" / "singles" / "text" / "model.keras", safe_mode=True)
    assert seen["text"], "the probe did not end in _restore_best"
    for a, b in zip(single.get_layer("text_encoder").weights, seen["text"]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), b)


def test_evaluate_counts_each_row_once_when_rows_are_skipped(default_run, tmp_path):
    from mbm_keras.evaluate import evaluate

    folder, _, _ = default_run
    rows = make_files(tmp_path, n=10)
    good = write_csv(tmp_path / "good.csv", rows)
    bad_rows = [dict(r) for r in rows]
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG cut short
    bad_rows[3]["img"] = "img/broken.png"
    bad = write_csv(tmp_path / "bad.csv", bad_rows)
    both = evaluate(str(folder / "run"), str(bad), on_error="skip", out=str(tmp_path / "bad.json"))
    clean = evaluate(str(folder / "run"), str(write_csv(tmp_path / "nine.csv", rows[:3] + rows[4:])),
                     out=str(tmp_path / "nine.json"))
    assert both["examples"] == 9 and both["skipped"] == 1
    assert both["accuracy"] == pytest.approx(clean["accuracy"], abs=1e-6)  # no row stood in for the broken one
    assert sum(both["confusion_matrix"][0]) + sum(both["confusion_matrix"][1]) == 9
    results = evaluate(str(folder / "run"), str(good), out=str(tmp_path / "good.json"))
    assert results["examples"] == 10
    # evaluate says what the run kept and why.
    from mbm_keras.evaluate import format_report

    summary = json.loads((folder / "run" / "summary.json").read_text())
    assert results["run"]["kept"] == summary["kept"] and results["run"]["epoch"] == summary["epoch"]
    text = format_report(results)
    kept = "the fusion (" if summary["kept"] == "fusion" else summary["kept"]
    assert f"the run kept: {kept}" in text and "its epoch (" in text and "chosen on: data.val_split" in text


@pytest.mark.slow  # three retrieval trainings (the fused candidate and each feature alone), as the trained task runs
def test_a_fused_retrieval_candidate_is_compared_with_each_of_its_features(tmp_path):
    from mbm_keras.run import Run

    path, _ = manifest(tmp_path)
    config = {"data": {"train": str(path), "columns": {"image": "img", "text": "caption", "tabular": ["age"],
                                                        "label": "label"}, "batch_size": 8,
                       "preprocessing": {"image_size": [16, 16], "text_length": 6, "max_tokens": 100}},
              "model": {"image": "small_cnn", "text": "cnn", "tabular": "mlp", "fusion": "concat"},
              "task": {"kind": "retrieval", "query": ["tabular"], "candidate": ["image", "text"],
                       "embedding_dim": 8},
              "train": {"epochs": 2, "learning_rate": 0.01, "seed": 1},
              "output": str(tmp_path / "run")}
    result = train(config, verbose=0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metric"] == "map" and set(summary["singles"]) == {"image", "text"}
    for feature in ("image", "text"):
        assert (tmp_path / "run" / "singles" / feature / "model.keras").is_file()
    model, _ = Run(str(tmp_path / "run")).load()
    candidate = sorted(model.get_layer("candidate_tower").input)
    best = max(summary["singles"], key=summary["singles"].get)
    if "fused_val" in summary:  # a feature alone was better on validation: it is what the run holds
        assert summary["singles"][best] > summary["fused_val"]["map"]
        assert candidate == [best] and summary["kept"].startswith(f"the candidate {best!r} alone")
    else:
        assert candidate == ["image", "text"] and summary["kept"].startswith("the fused candidate")
        assert summary["val"]["map"] >= max(summary["singles"].values())
    assert result["summary"]["kept"] == summary["kept"]
    # evaluate says what the run kept (a fresh process loading a retrieval run: tests/test_tasks.py, slow).
    from mbm_keras.evaluate import evaluate, format_report

    text = format_report(evaluate(str(tmp_path / "run"), str(path), out=str(tmp_path / "eval.json")))
    assert "map: " in text and "the run kept: " in text
