"""Tasks as objects: a task defined in this file (not in mbm_keras) goes through
`train`, `evaluate`, `export_model` and `predict` like the built-in ones, and the
drivers hold no branch on a task kind."""

import ast
import json
import os

import numpy as np
import pytest
from test_data import make_files, write_csv

from mbm_keras.tasks import Task, get_task, list_tasks, register_task, task_of
from mbm_keras.training import ConfigError, load_config, train


class ClassIndex(Task):
    """A toy task: regress the class's index (a float) from the fused features, with MSE."""

    options = {"index_scale": (float, 1.0)}
    ranges = {"index_scale": (0, None, False, None)}

    def batches(self, ctx, dataset):
        import tensorflow as tf

        scale = ctx.task["index_scale"]
        return dataset.map(lambda x, y: (x, tf.cast(tf.reshape(y, (-1, 1)), "float32") * scale))

    def build(self, ctx):
        from mbm_keras import build_fusion_model

        return build_fusion_model(**{**ctx.model_kwargs, "head": "linear", "num_classes": 1})

    def loss_and_metrics(self, ctx):
        return "mse", ["mae"]

    def answer(self, outputs, classes, top, path):
        if isinstance(outputs, dict):  # a SavedModel's signature
            outputs = outputs.get("predictions", outputs.get("probabilities")).numpy()[0]
        return [("class_index", float(np.ravel(outputs)[0]))]


@pytest.fixture(scope="module", autouse=True)
def class_index_task():
    """The toy task is registered as a user's module would (`register_task`), for this module's tests only:
    the other modules of the same worker see the built-in tasks alone."""
    from mbm_keras.tasks.base import TASKS

    register_task("class_index")(ClassIndex)
    yield
    TASKS.unregister("class_index")


def test_a_task_registered_outside_the_package_is_a_config_kind():
    assert "class_index" in list_tasks()
    config = {"data": {"train": "t.csv", "columns": {"image": "img", "label": "label"}},
              "model": {"image": "small_cnn"}, "task": {"kind": "class_index", "index_scale": 2.0}}
    assert load_config(config)["task"]["index_scale"] == 2.0
    with pytest.raises(ConfigError, match=r"task.index_scale must be > 0. Received: task.index_scale=0"):
        load_config({**config, "task": {"kind": "class_index", "index_scale": 0.0}})
    with pytest.raises(ConfigError, match=r"task.index_scale is for task.kind: class_index"):
        load_config({**config, "task": {"index_scale": 3.0}})
    with pytest.raises(ConfigError, match=r"task.embedding_dim is for task.kind: retrieval"):
        load_config({**config, "task": {"kind": "class_index", "embedding_dim": 64}})
    with pytest.raises(ValueError, match=r"task 'class_index' is registered twice"):
        register_task("class_index")(ClassIndex)


def test_a_run_without_config_is_recognized_by_its_model():
    assert task_of(None, None, None).name == "classification"
    assert task_of({"task": {"kind": "retrieval"}}).name == "retrieval"
    assert get_task("classification").balances and not get_task("retrieval").balances


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    rows = make_files(folder, n=60)
    path = write_csv(folder / "train.csv", rows)
    config = {"data": {"train": str(path), "columns": {"image": "img", "text": "caption", "label": "label"},
                       "batch_size": 8, "preprocessing": {"image_size": [16, 16], "text_length": 6, "max_tokens": 100}},
              "model": {"image": "small_cnn", "text": "cnn"},
              "train": {"epochs": 2, "learning_rate": 0.01, "seed": 1},
              "task": {"kind": "class_index", "index_scale": 2.0},
              "output": str(folder / "run")}
    return folder, path, rows, train(config, verbose=0)


@pytest.fixture(scope="module")
def toy_export(toy_run, tmp_path_factory):
    """The toy run's SavedModel export (`export_model`'s result)."""
    from mbm_keras.deploy import export_model

    _, _, _, result = toy_run
    return export_model(result["output"], "saved_model", str(tmp_path_factory.mktemp("toy-sm") / "sm"), verbose=False)


def test_the_toy_task_trains_evaluates_exports_and_predicts(toy_run, toy_export):
    from mbm_keras.deploy.predicting import predict
    from mbm_keras.evaluate import evaluate, format_report

    folder, path, rows, result = toy_run
    run = result["output"]
    summary = json.loads(open(os.path.join(run, "summary.json")).read())
    assert summary["task"] == "class_index" and set(summary["val"]) >= {"loss", "mae"}
    assert result["model"].output.shape[-1] == 1  # the task's own model, not the classifier
    assert "val_mae" in result["history"]

    results = evaluate(run, path)
    assert results["task"] == "class_index" and results["examples"] == 60
    assert results["mae"] >= 0 and "per_class" not in results
    assert "mae:" in format_report(results)

    export = toy_export
    assert export["check"]["max_abs_diff"] <= 1e-4 and os.path.isfile(os.path.join(export["out"], "task.json"))

    image = os.path.join(folder, rows[0]["img"])
    direct = result["model"]
    keras_answer = predict(run, image=image, text=rows[0]["caption"])
    served_answer = predict(export["out"], image=image, text=rows[0]["caption"])
    assert keras_answer[0][0] == served_answer[0][0] == "class_index"
    assert abs(keras_answer[0][1] - served_answer[0][1]) < 1e-4
    assert direct is not None


DRIVERS = ["mbm_keras/training/trainer.py", "mbm_keras/evaluate.py", "mbm_keras/deploy/exporting.py",
           "mbm_keras/deploy/predicting.py", "mbm_keras/cli"]


def test_no_driver_names_a_task_kind():
    """A driver that compares against a task's name ("retrieval", ...) branches on the kind; the tasks decide."""
    root = os.path.join(os.path.dirname(__file__), "..")
    kinds = {"classification", "retrieval", "transcription", "autoencoder"}
    files = []
    for driver in DRIVERS:
        path = os.path.join(root, driver)
        files += ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".py")]
                  if os.path.isdir(path) else [path])
    found = []
    for path in files:
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for part in [node.left, *node.comparators]:
                    for leaf in ast.walk(part):
                        if isinstance(leaf, ast.Constant) and leaf.value in kinds:
                            found.append(f"{os.path.relpath(path, root)}:{node.lineno} compares with {leaf.value!r}")
    assert not found, "\n".join(found)


def _task_configs(folder, train_csv, speech_csv):
    """A tiny run config of every built-in task (one or two epochs on the test files)."""
    prep = {"image_size": [16, 16], "text_length": 6, "max_tokens": 100}
    data = {"train": str(train_csv), "batch_size": 8, "preprocessing": prep}
    return {
        "classification": {"data": {**data, "columns": {"image": "img", "text": "caption", "label": "label"}},
                           "model": {"image": "small_cnn", "text": "cnn"},
                           "train": {"epochs": 1, "keep_best_of": "fusion"}},  # the fused model's commands
        "retrieval": {"data": {**data, "columns": {"image": "img", "text": "caption", "label": "label"}},
                      "model": {"image": "small_cnn", "text": "cnn"}, "train": {"epochs": 1},
                      "task": {"kind": "retrieval", "query": ["text"], "candidate": ["image"], "embedding_dim": 8}},
        "transcription": {"data": {"train": str(speech_csv), "batch_size": 8, "columns": {"audio": "wav",
                                                                                            "label": "label"},
                                   "preprocessing": {"sample_rate": 8000, "audio_length": 1600}},
                          "model": {"audio": "logmel_tcn", "audio_kwargs": {"units": 16}}, "train": {"epochs": 2},
                          "task": {"kind": "transcription"}},
        "autoencoder": {"data": {**data, "columns": {"image": "img"}}, "model": {"image": "small_cnn"},
                        "train": {"epochs": 1}, "task": {"kind": "autoencoder"}},
    }


@pytest.mark.slow
def test_a_run_of_every_task_is_evaluated_exported_and_predicted_from_fresh_processes(tmp_path):
    """`mbm-keras evaluate`, `export` and `predict` on a run of each built-in task, each task's commands in a
    fresh process (the first model a process loads is that task's: its layers must be registered by loading
    the run, as in the retrieval bug that issue 32 found). A task without an answer says so in one line."""
    from helpers import batch

    rows = make_files(tmp_path, n=60)
    train_csv = write_csv(tmp_path / "train.csv", rows)
    speech_csv = write_csv(tmp_path / "speech.csv", rows)  # the label ("red"/"blue") is the transcript
    runs = {}
    for kind, config in _task_configs(tmp_path, train_csv, speech_csv).items():
        runs[kind] = str(tmp_path / "runs" / kind)
        train({**config, "output": runs[kind]}, verbose=0)
    image, text, clip = str(tmp_path / rows[0]["img"]), rows[0]["caption"], str(tmp_path / rows[0]["wav"])
    for kind, run in runs.items():
        data = str(speech_csv if kind == "transcription" else train_csv)
        export = str(tmp_path / "exports" / kind)
        cases = {"evaluate": ["evaluate", "--model", run, "--data", data],
                 "export": ["export", "--model", run, "--format", "saved_model", "--out", export],
                 "predict": ["predict", "--model", run, "--image", image, "--text", text]}
        if kind == "transcription":
            cases["predict"] = ["predict", "--model", run, "--audio", clip]
            cases["predict export"] = ["predict", "--model", export, "--audio", clip]
            cases["transcribe"] = ["transcribe", "--model", run, "--audio", clip]
        if kind == "classification":
            cases["predict export"] = ["predict", "--model", export, "--image", image, "--text", text]
        results = batch(cases, tmp_path)
        for name, result in results.items():
            assert result["traceback"] is None, (kind, name, result["traceback"])
        codes = {name: result["code"] for name, result in results.items()}
        if kind == "autoencoder":  # a pretraining run holds encoders, not a model to use: said in one line
            assert set(codes.values()) == {2}, (kind, codes)
            assert all("is a pretraining run" in r["stderr"] for r in results.values())
            continue
        assert codes["evaluate"] == 0 and codes["export"] == 0, (kind, results)
        with open(os.path.join(export, "task.json")) as f:
            assert json.load(f) == {"task": kind}
        if kind == "classification":
            assert codes["predict"] == codes["predict export"] == 0
            assert results["predict"]["stdout"].split()[0] in ("red", "blue")
        elif kind == "retrieval":
            assert codes["predict"] == 2 and "mbm-keras embed" in results["predict"]["stderr"]
        else:
            assert codes["predict"] == 2 and "mbm-keras transcribe" in results["predict"]["stderr"]
            assert codes["predict export"] == 0 and codes["transcribe"] == 0, results


def test_a_damaged_config_or_task_file_is_named(toy_run, toy_export, tmp_path):
    """A run's config.json and an export's task.json say which task reads them: a file that is not JSON, not an
    object, or names no registered task is an error naming that file, and nothing is loaded or written."""
    import shutil

    from mbm_keras.deploy.predicting import predict
    from mbm_keras.run import ArtifactError
    from mbm_keras.tasks import load_run

    folder, _, rows, result = toy_run
    run = tmp_path / "run"
    shutil.copytree(result["output"], run)
    config = run / "config.json"
    for text, error, message in (("{not json", ArtifactError, r"config.json: not valid JSON"),
                                 ("[1, 2]", ArtifactError, r"config.json: expected a JSON object, found list"),
                                 ('{"task": {"kind": "search"}}', ValueError,
                                  r"config.json: task 'search' is not a registered task \(")):
        config.write_text(text)
        with pytest.raises(error, match=message):
            load_run(str(run))
    export = str(tmp_path / "sm")
    shutil.copytree(toy_export["out"], export)  # a copy: the files below are damaged
    image = os.path.join(folder, rows[0]["img"])
    task_file = os.path.join(export, "task.json")
    for text, error, message in (("garbage", ArtifactError, r"task.json: not valid JSON"),
                                 ('["class_index"]', ArtifactError, r"task.json: expected a JSON object"),
                                 ('{"task": "nope"}', ValueError, r"task.json: task 'nope' is not a registered task"),
                                 ('{}', ValueError, r"task.json: task None is not a registered task")):
        with open(task_file, "w") as f:
            f.write(text)
        with pytest.raises(error, match=message):
            predict(export, image=image, text=rows[0]["caption"])
