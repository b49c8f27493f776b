"""train(config) and `mbm-keras train`: config validation, a run folder, resume."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_data import make_files, write_csv

from mbm_keras.training import ConfigError, load_config, train


def run_config(folder, **overrides):
    rows = make_files(folder, n=32)
    write_csv(folder / "train.csv", rows[:24])
    write_csv(folder / "val.csv", rows[24:])
    config = {
        "data": {
            "train": "train.csv",
            "val": "val.csv",
            "columns": {"image": "img", "text": "caption", "label": "label"},
            "preprocessing": {"image_size": [16, 16], "text_length": 6, "max_tokens": 100},
            "batch_size": 8,
        },
        "model": {"image": "small_cnn", "text": "cnn", "fusion": "gated"},
        # balance none, keep the fusion: these tests are about the fusion's own training (tests/test_balance.py
        # and tests/test_validation.py cover the rest).
        "train": {"epochs": 3, "learning_rate": 0.01, "seed": 1, "balance": "none", "keep_best_of": "fusion"},
        "output": "run",
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        config.setdefault(section, {})[name] = value
    path = folder / "run.json"
    path.write_text(json.dumps(config))
    return path


def test_config_errors_name_the_key_and_value(tmp_path):
    path = run_config(tmp_path)
    config = json.loads(path.read_text())
    config["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['train.epoch'\]. Valid keys in train: epochs"):
        load_config(config)
    config = json.loads(path.read_text())
    config["train"]["epochs"] = "ten"
    with pytest.raises(ConfigError, match=r"train.epochs must be a int. Received: train.epochs='ten'"):
        load_config(config)
    config = json.loads(path.read_text())
    del config["data"]["columns"]
    with pytest.raises(ConfigError, match=r"data.columns is required"):
        load_config(config)
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="Config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_and_json_configs_are_the_same(tmp_path):
    import yaml

    path = run_config(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(json.loads(path.read_text())))
    assert load_config(tmp_path / "run.yaml") == load_config(path)
    assert load_config(path)["data"]["train"] == str(tmp_path / "train.csv")  # relative to the file


def test_train_writes_a_complete_run_folder(tmp_path):
    result = train(run_config(tmp_path), verbose=0)
    out = tmp_path / "run"
    assert result["output"] == str(out)
    for name in ("model.keras", "best.keras", "config.json", "preprocessor.json", "vocabulary.txt", "labels.json", "history.csv"):
        assert (out / name).is_file(), name
    assert (out / "logs").is_dir() and not (out / "backup-stage1").exists()
    assert json.loads((out / "labels.json").read_text()) == ["blue", "red"]
    assert len((out / "history.csv").read_text().strip().splitlines()) == 1 + 3
    reloaded = keras.models.load_model(out / "model.keras")
    from mbm_keras.data import Preprocessor, make_dataset

    pre = Preprocessor.load(out)
    x, _ = next(iter(make_dataset(tmp_path / "val.csv", preprocessor=pre)))
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), result["model"].predict(x, verbose=0), atol=1e-6)
    assert result["history"]["accuracy"][-1] > 0.6  # the colour is a clean signal


def test_classification_report_counts_per_class_and_confusion():
    from mbm_keras.evaluate import classification_report

    report = classification_report([0, 0, 1, 2], np.eye(3)[[0, 1, 1, 0]], ["a", "b", "c"])
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert report["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert report["per_class"]["b"]["precision"] == 0.5 and report["per_class"]["c"]["recall"] == 0.0


def test_cli_train_evaluate_and_bad_inputs(tmp_path):
    """`mbm-keras train`, then `evaluate --robustness` on its run, and a bad config and a folder without a model:
    the four command lines in one fresh process (tests/cli_batch.py)."""
    from helpers import batch

    path = run_config(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(path.read_text()), "trian": {}}))
    run = tmp_path / "cli_run"
    results = batch({
        "train": ["train", "--config", str(path), "--epochs", "2", "--out", str(run)],
        "evaluate": ["evaluate", "--model", str(run), "--data", str(tmp_path / "val.csv"), "--robustness"],
        "bad config": ["train", "--config", str(bad)],
        "no model": ["evaluate", "--model", str(tmp_path), "--data", "x.csv"],
    }, tmp_path)
    for result in results.values():
        assert result["traceback"] is None, result["traceback"]
    assert results["train"]["code"] == 0, results["train"]["stderr"][-3000:]
    assert (run / "model.keras").is_file() and "Run written to" in results["train"]["stdout"]
    assert results["evaluate"]["code"] == 0, results["evaluate"]["stderr"][-3000:]
    out = results["evaluate"]["stdout"]
    assert "confusion matrix" in out and "precision" in out and "reliance" in out
    robust = json.loads((run / "eval-val-robustness.json").read_text())
    assert set(robust["ablation"]) == {"image", "text"} and set(robust["noise"]["image"]) == {"0.1", "0.3", "0.6", "1.0"}
    assert (run / "eval-val-robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / "eval-val.json").read_text())
    assert saved["examples"] == 8 and sum(map(sum, saved["confusion_matrix"])) == 8
    assert set(saved["per_class"]) == {"blue", "red"} and 0 <= saved["loss"]
    assert results["bad config"]["code"] == 2 and "unknown key(s) ['trian']" in results["bad config"]["stderr"]
    assert results["no model"]["code"] == 2 and "No model.keras in" in results["no model"]["stderr"]


def test_strategy_and_precision_choices_are_checked(tmp_path):
    config = json.loads(run_config(tmp_path).read_text())
    config["train"]["strategy"] = "gpu"
    with pytest.raises(ConfigError, match=r"train.strategy must be one of \('auto', 'cpu', 'mirrored', 'tpu', 'multi_worker'\)"):
        load_config(config)
    config["train"].update(strategy="auto", mixed_precision="float8")
    with pytest.raises(ConfigError, match=r"train.mixed_precision must be one of"):
        load_config(config)
    config["train"].update(mixed_precision=None, fine_tune={"epoch": 1})
    with pytest.raises(ConfigError, match=r"train.fine_tune.epoch"):
        load_config(config)
    config.update(train={"optimizer": "lamb"})
    with pytest.raises(ConfigError, match=r"train.optimizer must be one of \('adam', 'adamw', 'sgd', 'rmsprop'\)"):
        load_config(config)
    config.update(train={"lr_schedule": "linear"})
    with pytest.raises(ConfigError, match=r"train.lr_schedule must be one of"):
        load_config(config)


def test_multi_worker_needs_tf_config(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="strategy 'multi_worker' needs the TF_CONFIG environment variable"):
        train(run_config(tmp_path, train__strategy="multi_worker"), verbose=0)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match=r"TF_CONFIG must be JSON .* Received: TF_CONFIG='\{not json'"):
        train(run_config(tmp_path, train__strategy="multi_worker"), verbose=0)


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _two_workers(tmp_path, command, out):
    """Runs `command` as two multi_worker processes on 127.0.0.1; returns their outputs."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    logs, workers = [], []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        logs.append(open(tmp_path / f"worker{index}.log", "w+"))
        workers.append(subprocess.Popen(command + ["--strategy", "multi_worker", "--out", str(out)],
                                        env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
    try:
        codes = [w.wait(timeout=600) for w in workers]
    finally:
        for w in workers:
            w.kill()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    for i, text in enumerate(outputs):
        assert f"multi_worker: task worker {i} of 2 worker(s)" in text
        assert "Training on strategy 'multi_worker' (2 replica(s))" in text and "Epoch 2/2" in text  # Keras' progress bar
    return outputs


def _assert_same_run(multi_worker, single):
    chief, worker1 = multi_worker, multi_worker / "workers" / "worker-1"
    for name in ("model.keras", "best.keras", "history.csv", "config.json", "labels.json"):
        assert (chief / name).is_file() and (worker1 / name).is_file()
    assert not (chief / "backup-stage1").exists()
    reference = _final_weights(single)
    for a, b, c in zip(_final_weights(chief), _final_weights(worker1), reference):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)
    # Same metrics as the single process, summed over both workers.
    mw_log, single_log = [(p / "history.csv").read_text().splitlines() for p in (chief, single)]
    assert mw_log[0] == single_log[0]
    for row_a, row_b in zip(mw_log[1:], single_log[1:]):
        np.testing.assert_allclose([float(v) for v in row_a.split(",")], [float(v) for v in row_b.split(",")], rtol=1e-4)


@pytest.mark.slow
def test_multi_worker_two_processes_match_one_process(tmp_path):
    # Two workers on 127.0.0.1 (MultiWorkerMirroredStrategy, the custom loop
    # that replaces Keras' broken fit) end with identical weights, equal to one
    # process training with fit on the same global batches of 8. small_cnn's
    # BatchNormalization uses global-batch statistics, so its moving averages
    # match too. SGD: Adam would amplify float rounding in near-zero gradients.
    path = run_config(tmp_path, train__epochs=2, train__optimizer="sgd", train__lr_schedule="cosine",
                      train__learning_rate=0.05)
    command = [sys.executable, "-m", "mbm_keras.cli", "train", "--config", str(path)]
    _two_workers(tmp_path, command, tmp_path / "mw")
    single = subprocess.run(command + ["--strategy", "auto", "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    _assert_same_run(tmp_path / "mw", tmp_path / "single")


@pytest.mark.slow
def test_multi_worker_on_shards_trains_as_one_process_on_the_manifest(tmp_path):
    # Each worker reads its own shards (every 2nd of 6 equal shards of 4 rows),
    # 4 rows a step. Unshuffled, step t's global batch is then rows 8t..8t+7,
    # the manifest's batch t, so the weights are the one-process run's on the
    # manifest. (Shuffled, workers read different shards each epoch, and no
    # manifest run draws the same batches: tests/test_shards.py checks those.)
    from mbm_keras.data.shards import pack

    path = run_config(tmp_path, train__epochs=2, train__optimizer="sgd", train__lr_schedule="cosine",
                      train__learning_rate=0.05, data__shuffle=False)
    index = pack(str(tmp_path / "train.csv"), str(tmp_path / "shards"), shard_rows=4, progress=False)
    assert [s["rows"] for s in index["shards"]] == [4] * 6
    config = json.loads(path.read_text())
    config["data"]["train"] = "shards"
    (tmp_path / "shards.json").write_text(json.dumps(config))
    cli = [sys.executable, "-m", "mbm_keras.cli", "train", "--config"]
    outputs = _two_workers(tmp_path, cli + [str(tmp_path / "shards.json")], tmp_path / "mw")
    assert "each of 2 workers reads its own shards, 3 steps of 4 rows per epoch" in outputs[0]
    assert "left out" not in outputs[0]
    single = subprocess.run(cli + [str(path), "--strategy", "auto", "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    _assert_same_run(tmp_path / "mw", tmp_path / "single")


MIRRORED = r"""
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mbm_keras.training import train
result = train(sys.argv[1], verbose=0)
print("strategy", result["strategy"], "replicas", len(tf.config.list_logical_devices("CPU")))
"""


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus(tmp_path):
    path = run_config(tmp_path, train__strategy="mirrored", train__epochs=2)
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Training on strategy 'mirrored' (2 replica(s))" in proc.stdout
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.slow
def test_tpu_readiness_on_cpu_xla_static_shapes_bfloat16(tmp_path):
    # No TPU here: the same model and pipeline under XLA with static shapes and
    # mixed_bfloat16 is the closest check (what TPUStrategy needs).
    path = run_config(tmp_path, train__jit_compile=True, train__mixed_precision="mixed_bfloat16", train__epochs=2)
    result = train(path, verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    model = result["model"]
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    assert model.get_layer("fusion").dtype_policy.compute_dtype == "bfloat16"
    assert np.isfinite(result["history"]["loss"]).all()


@pytest.mark.slow
def test_two_stage_fine_tuning_from_the_config(tmp_path):
    path = run_config(
        tmp_path,
        model__image="mobilenet_v3_small",
        model__freeze_backbone=True,
        data__preprocessing={"image_size": [32, 32], "text_length": 6},
        train__epochs=1,
        train__fine_tune={"epochs": 1, "num_layers": 5, "learning_rate": 1e-5},
    )
    result = train(path, verbose=0)
    assert len(result["history"]["loss"]) == 2
    backbone = result["model"].get_layer("image_encoder").get_layer("MobileNetV3Small")
    assert backbone.trainable and not backbone.layers[0].trainable
    assert float(keras.ops.convert_to_numpy(result["model"].optimizer.learning_rate)) == pytest.approx(1e-5)


def _final_weights(run):
    return [w for w in keras.models.load_model(run / "model.keras").get_weights()]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    # SIGKILL during epoch 3 of 5, start the same command again: it resumes from
    # the last finished epoch and ends with the weights of an uninterrupted run
    # (dropout included), each epoch logged once.
    import signal
    import time

    path = run_config(tmp_path, train__epochs=5, model__dropout=0.3, data__augment=True)
    config = json.loads(path.read_text())
    config["data"]["batch_size"] = 4
    path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "mbm_keras.cli", "train", "--config", str(path)]
    reference = subprocess.run(command + ["--out", str(tmp_path / "straight")], capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = killed / "backup-stage1" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metadata.is_file() and '"epoch": 2' in metadata.read_text():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.keras").exists()

    resumed = subprocess.run(command + ["--out", str(killed)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for a, b in zip(_final_weights(tmp_path / "straight"), _final_weights(killed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    epochs = [line.split(",")[0] for line in (killed / "history.csv").read_text().strip().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3", "4"]


def test_best_checkpoint_and_early_stopping_remember_epochs_before_a_resume(tmp_path):
    from mbm_keras.training.callbacks import BestModelCheckpoint, EpochLog, ResumableEarlyStopping

    history = tmp_path / "history.csv"
    log = EpochLog(str(history))
    for epoch, val_loss in enumerate([1.0, 0.5, 0.7]):  # the run that was killed
        log.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    best = BestModelCheckpoint(str(tmp_path / "best.keras"), "val_loss", str(history))
    stop = ResumableEarlyStopping(str(history), monitor="val_loss", patience=2)
    for callback in (best, stop):
        callback.set_model(model)
        callback.on_train_begin()
        callback.on_epoch_begin(3)  # resumed at epoch 3
    assert best.best == 0.5 and stop.best == 0.5 and stop.wait == 1
    best.on_epoch_end(3, {"val_loss": 0.6})
    assert not (tmp_path / "best.keras").exists()  # worse than epoch 1: not the best model
    stop.on_epoch_end(3, {"val_loss": 0.6})
    assert model.stop_training  # patience 2 counted from epoch 1, across the crash
    best.on_epoch_end(4, {"val_loss": 0.4})
    assert (tmp_path / "best.keras").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "history.csv"]


def test_robustness_report_finds_the_modality_the_model_uses(tmp_path):
    # A model whose answer depends on the image's brightness only (fixed
    # weights): removing the image drops accuracy to chance, removing the text
    # changes nothing, and only image noise hurts.
    import tensorflow as tf

    from mbm_keras.evaluate import robustness_report

    image, text = keras.Input((1, 1, 3), name="image"), keras.Input((4,), dtype="int32", name="text")
    bright = keras.layers.GlobalAveragePooling2D()(image)
    words = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 3)(text))
    features = keras.layers.Concatenate()([bright, words])
    out = keras.layers.Dense(2, activation="softmax")(features)
    model = keras.Model({"image": image, "text": text}, out)
    kernel = np.zeros((6, 2), "float32")
    kernel[:3, 0], kernel[:3, 1] = 0.2, -0.2  # class 0 when bright
    model.layers[-1].set_weights([kernel, np.array([-76.5, 76.5], "float32")])  # threshold at 127.5
    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = {"image": np.where(y[:, None, None, None] == 0, 200.0, 55.0).astype("float32") + rng.normal(0, 10, (64, 1, 1, 3)).astype("float32"),
         "text": rng.integers(1, 10, (64, 4)).astype("int32")}
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32"))).batch(16)
    report = robustness_report(model, ds, out=str(tmp_path / "r"))
    assert report["accuracy"] == 1.0 and report["examples"] == 64
    assert report["ablation"] == {"image": 0.5, "text": 1.0}
    assert report["reliance"] == {"image": 1.0, "text": 0.0}
    assert all(v == 1.0 for v in report["noise"]["text"].values())
    assert report["noise"]["image"]["0.1"] == 1.0 and report["noise"]["image"]["1.0"] < 0.95
    assert json.loads((tmp_path / "r.json").read_text())["reliance"]["image"] == 1.0
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "r.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="single-label classifiers"):
        robustness_report(model, tf.data.Dataset.from_tensor_slices((x, y.astype("float32"))).batch(16))
