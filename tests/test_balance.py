"""train.balance and train.keep_best_of: single models first, gradient modulation,
the per-modality summary, keeping the better model, resume, bad input."""

import json

import keras
import numpy as np
import pytest
from test_training import run_config

from mbm_keras import build_fusion_model
from mbm_keras.evaluate import evaluate, format_report
from mbm_keras.run import Run
from mbm_keras.training import ConfigError, load_config, train
from mbm_keras.training import balance
from mbm_keras.training.callbacks import EpochLog
from mbm_keras.training.run_folder import ResumeMismatchError


@pytest.fixture(scope="module")
def unimodal_run(tmp_path_factory):
    """image + text (gated), train.balance unimodal, keep_best_of: all, 2 epochs."""
    folder = tmp_path_factory.mktemp("unimodal")
    path = run_config(folder, train__epochs=2, train__keep_best_of="all", train__balance="unimodal")
    result = train(path, verbose=0)
    return folder, result


def test_unimodal_balance_trains_each_modality_alone_first_and_starts_the_fusion_from_them(unimodal_run):
    folder, result = unimodal_run
    run = folder / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["balance"] == "unimodal" and summary["modalities"] == ["image", "text"]
    for modality in ("image", "text"):  # each single model is a run folder of its own, with its history
        single = run / "singles" / modality
        assert (single / "model.keras").is_file() and (single / "preprocessor.json").is_file()
        assert len((single / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
        model = keras.saving.load_model(single / "model.keras", safe_mode=True)
        assert [t.name for t in model.inputs] == [modality]  # its modality alone
    # The fusion trained with modality dropout, so it has masks; the scores are numbers in [0, 1].
    assert {"image_mask", "text_mask"} <= set(result["model"].input)
    assert set(summary["singles"]) == {"image", "text"} == set(summary["masked"])
    for value in [summary["fusion"], *summary["singles"].values(), *summary["masked"].values()]:
        assert 0.0 <= value <= 1.0
    best = max(summary["singles"], key=summary["singles"].get)
    assert summary["best_single"] == best
    assert summary["gain"] == pytest.approx(summary["fusion"] - summary["singles"][best])
    # keep_best_of: all keeps the fusion unless a single model is strictly better.
    assert (summary["kept"] == "fusion") == (summary["gain"] >= 0)


@pytest.mark.slow
def test_unimodal_groups_the_features_of_a_modality(tmp_path):
    """Seven features of five modalities, two cameras sharing one encoder: one
    single model per modality, and the fusion starts from their encoders."""
    from test_features import cars_config, write_cars

    write_cars(tmp_path)
    config = cars_config(tmp_path)
    config["train"] = {**config["train"], "balance": "unimodal", "epochs": 1}
    result = train(config, verbose=0)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "singles").iterdir()) == ["audio", "image", "tabular", "text", "timeseries"]
    cameras = keras.saving.load_model(run / "singles" / "image" / "model.keras", safe_mode=True)
    assert sorted(cameras.input) == ["front", "rear"]
    assert [layer.name for layer in cameras.layers if layer.name.endswith("_encoder")] == ["front_encoder"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["modalities"] == ["image", "text", "timeseries", "audio", "tabular"]
    assert set(summary["singles"]) == set(summary["masked"]) == set(summary["modalities"])
    # After one epoch of fusion training, each encoder's kernels are still near its single model's: the fusion
    # started there (a fresh encoder of the same shape is far away).
    fusion = result["model"]
    keras.utils.set_random_seed(123)
    fresh = build_fusion_model(features=config["model"]["features"], share_encoders={"rear": "front"},
                               **Run(run).load()[1].model_kwargs(), compile=False)
    for feature, modality in (("front", "image"), ("title", "text"), ("speed", "timeseries"), ("engine", "audio")):
        single = keras.saving.load_model(run / "singles" / modality / "model.keras", safe_mode=True)
        a, b, c = (m.get_layer(f"{feature}_encoder").get_weights() for m in (single, fusion, fresh))
        kernels = [i for i, w in enumerate(a) if w.ndim >= 2]
        near = sum(np.linalg.norm(a[i] - b[i]) for i in kernels)
        far = sum(np.linalg.norm(c[i] - b[i]) for i in kernels)
        assert near < 0.5 * far, (feature, near, far)


def test_copy_encoders_starts_the_fusion_from_the_single_models():
    kwargs = dict(image="small_cnn", text="cnn", image_shape=(16, 16, 3), text_length=6, vocab_size=50,
                  num_classes=2, compile=False)
    features = {"image": "image", "text": "text"}
    single = balance.build_single_model(kwargs, features, "text", "concat")
    fusion = build_fusion_model(**kwargs)
    balance.copy_encoders(single, fusion, ["text"])
    for a, b in zip(single.get_layer("text_encoder").weights, fusion.get_layer("text_encoder").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # The image encoder was not touched: it differs from a fresh image-only model's.
    other = balance.build_single_model(kwargs, features, "image", "concat")
    assert not all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)) for a, b in
                   zip(other.get_layer("image_encoder").weights, fusion.get_layer("image_encoder").weights))


def test_evaluate_shows_each_modality_next_to_the_fusion(unimodal_run):
    folder, _ = unimodal_run
    results = evaluate(folder / "run", folder / "val.csv")
    breakdown = results["modalities"]
    assert set(breakdown["singles"]) == {"image", "text"} and set(breakdown["masked"]) == {"image", "text"}
    assert breakdown["fusion"] == pytest.approx(results["accuracy"], abs=1e-6)
    text = format_report(results)
    assert "image alone" in text and "text alone" in text and "fusion with only image" in text
    assert "fusion - best single model" in text
    saved = json.loads((folder / "run" / "eval-val.json").read_text())
    assert saved["modalities"]["singles"] == breakdown["singles"]


@pytest.mark.slow
def test_keep_best_of_all_keeps_a_better_single_model_and_it_predicts(tmp_path, monkeypatch, capsys):
    # Make the fusion score below the text model on validation, as on data where it loses.
    score = balance._score
    monkeypatch.setattr(balance, "_score", lambda model, ds, metric: score(model, ds, metric) - (
        0.5 if model.name == "fusion_model" else 0.0))
    path = run_config(tmp_path, train__epochs=2, train__keep_best_of="all", model__fusion="concat")
    result = train(path, verbose=0)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    kept = summary["best_single"]
    assert summary["gain"] < 0 and summary["kept"].startswith(f"the {kept} model alone")
    out = capsys.readouterr().out
    assert "WARNING: the fusion scores below its best modality alone" in out and "kept (train.keep_best_of: all)" in out
    # The run folder holds the single model and its preprocessing; fusion/ holds the fusion.
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert [t.name for t in model.inputs] == [kept] and result["model"].name == f"{kept}_only"
    assert json.loads((run / "preprocessor.json").read_text())["modalities"] == {kept: kept}
    fusion = keras.saving.load_model(run / "fusion" / "model.keras", safe_mode=True)
    assert {"image", "text"} <= set(fusion.input)
    from mbm_keras.deploy import predict

    cell = {"image": str(tmp_path / "img" / "0.png"), "text": "a crimson thing number 0"}[kept]
    top = predict(run, **{kept: cell})
    assert top[0][0] in ("red", "blue")


def test_ogm_ge_scales_the_leading_modality_down():
    """With image present the model below is sure of the label; with text alone
    it guesses: image leads, so its encoders' gradients are scaled down."""
    image_mask = keras.Input((1,), name="image_mask")
    text_mask = keras.Input((1,), name="text_mask")
    logits = keras.layers.Dense(2, name="decide")(image_mask)
    model = keras.Model({"image_mask": image_mask, "text_mask": text_mask},
                        keras.layers.Activation("softmax")(logits))
    model.get_layer("decide").set_weights([np.array([[10.0, -10.0]], "float32"), np.zeros(2, "float32")])
    trainer = balance.GradientModulation(model, {"image": ["image"], "text": ["text"]}, alpha=0.5)
    trainer.compile(loss=keras.losses.SparseCategoricalCrossentropy())
    x = {name: keras.ops.ones((4, 1)) for name in ("image_mask", "text_mask")}
    k = {m: float(v) for m, v in trainer.coefficients(x, keras.ops.zeros((4,), "int64")).items()}
    # image scores exp(-0) = 1, text exp(-ln 2) = 0.5: ratio 2 -> 1 - tanh(0.5 * (2 - 1)).
    assert k["image"] == pytest.approx(1 - np.tanh(0.5), abs=1e-3) and k["text"] == 1.0


@pytest.mark.slow
def test_ogm_ge_trains_through_the_config_and_saves_a_plain_model(tmp_path):
    path = run_config(tmp_path, train__epochs=2, train__balance="ogm_ge", model__fusion="concat")
    result = train(path, verbose=0)
    run = tmp_path / "run"
    for name in ("model.keras", "best.keras"):  # the functional model, not the training wrapper
        model = keras.saving.load_model(run / name, safe_mode=True)
        assert model.name == "fusion_model" and {"image_mask", "text_mask"} <= set(model.input)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["balance"] == "ogm_ge" and not summary["singles"] and set(summary["masked"]) == {"image", "text"}
    assert len(result["history"]["loss"]) == 2 and np.isfinite(result["history"]["loss"]).all()


@pytest.mark.slow
def test_a_run_killed_in_a_single_model_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Killed in the second single model's epoch, resumed; a kill after a
    single model's last epoch but before its save resumes without retraining."""
    path = run_config(tmp_path, train__epochs=2, model__fusion="concat", train__balance="unimodal")
    original = EpochLog.on_epoch_end

    def killed_in_text(self, epoch, logs=None):
        original(self, epoch, logs)
        if "singles/text" in self.path.replace("\\", "/") and epoch == 1:
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(EpochLog, "on_epoch_end", killed_in_text)
        with pytest.raises(KeyboardInterrupt):
            train(path, verbose=0)
    run = tmp_path / "run"
    assert (run / "singles" / "image" / "model.keras").is_file() and not (run / "model.keras").exists()
    # A changed balance is refused, naming it.
    config = load_config(path)
    with pytest.raises(ResumeMismatchError, match=r"train.balance: \"unimodal\" \(backup\) -> \"ogm_ge\" \(now\)"):
        train({**config, "train": {**config["train"], "balance": "ogm_ge"}}, verbose=0)
    resumed = train(path, verbose=0)
    assert not [p.name for p in run.iterdir() if p.name.startswith("backup-")]  # every stage's backup removed
    whole = train(path, verbose=0, output=str(tmp_path / "whole"))
    for a, b in zip(resumed["model"].weights, whole["model"].weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6)

    # Killed after the image model's last epoch, before it was saved: the resume trains no epoch of it again.
    save = Run.save

    def killed_saving(self, *args, **kwargs):
        if self.folder.replace("\\", "/").endswith("singles/image"):
            raise KeyboardInterrupt("killed")
        return save(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Run, "save", killed_saving)
        with pytest.raises(KeyboardInterrupt):
            train(path, verbose=0, output=str(tmp_path / "third"))
    third = tmp_path / "third"
    assert (third / "backup-single-image" / "training_metadata.json").is_file()
    epochs = []
    with monkeypatch.context() as m:
        m.setattr(EpochLog, "on_epoch_end", lambda self, epoch, logs=None: (epochs.append((self.path, epoch)),
                                                                             original(self, epoch, logs)))
        again = train(path, verbose=0, output=str(third))
    assert not [p for p, _ in epochs if "singles/image" in p.replace("\\", "/")]  # nothing of it retrained
    for a, b in zip(again["model"].weights, whole["model"].weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6)


def test_bad_balance_settings_are_refused_with_the_reason(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"train.balance must be one of \('auto', 'none', 'unimodal', 'probe', "
                                          r"'ogm_ge'\)"):
        load_config(run_config(tmp_path, train__balance="blend"))
    with pytest.raises(ConfigError, match=r"train.keep_best_of must be one of \('auto', 'fusion', 'all'\)"):
        load_config(run_config(tmp_path, train__keep_best_of="best"))
    with pytest.raises(ConfigError, match=r"train.ogm_alpha must be > 0"):
        load_config(run_config(tmp_path, train__ogm_alpha=0))
    # One modality: unimodal / ogm_ge have nothing to balance.
    train_cfg = {"balance": "unimodal", "keep_best_of": "fusion", "ogm_alpha": 0.5}
    data_cfg = {"modality_dropout": None, "missing_modalities": False}
    with pytest.raises(ConfigError, match=r"only image features \(front, rear\). Use train.balance: none"):
        balance.make_plan(train_cfg, data_cfg, {"front": "image", "rear": "image"})
    plan = balance.make_plan({**train_cfg, "balance": "auto"}, data_cfg, {"front": "image", "rear": "image"})
    assert plan.balance == "none" and not plan.masks and plan.dropout == 0
    plan = balance.make_plan({**train_cfg, "balance": "auto"}, data_cfg, {"image": "image", "text": "text"})
    assert plan.balance == "probe" and plan.singles and not plan.masks and plan.dropout == 0
    plan = balance.make_plan({**train_cfg, "balance": "unimodal"}, data_cfg, {"image": "image", "text": "text"})
    assert plan.balance == "unimodal" and plan.masks and plan.dropout == balance.UNIMODAL_DROPOUT
    # keep_best_of auto: the best of the fusion and the single models when there is validation data.
    for validation, kept in ((True, "all"), (False, "fusion")):
        plan = balance.make_plan({**train_cfg, "balance": "auto", "keep_best_of": "auto"}, data_cfg,
                                 {"image": "image", "text": "text"}, validation=validation)
        assert plan.keep == kept, validation
    # An explicit modality dropout stays the user's, and needs the masks as before.
    plan = balance.make_plan(train_cfg, {**data_cfg, "modality_dropout": 0.0}, {"image": "image", "text": "text"})
    assert plan.dropout == 0 and not plan.masks
    # A fusion that cannot take one modality alone: named; auto says it and trains without single models.
    two = {"image": "image", "text": "text"}
    with pytest.raises(ConfigError, match=r"train.balance: unimodal trains each modality alone, but fusion "
                                          r"'cross_attention' needs at least 2 features and the image, text"):
        balance.make_plan(train_cfg, data_cfg, two, "cross_attention")
    plan = balance.make_plan({**train_cfg, "balance": "auto"}, data_cfg, two, "cross_attention")
    assert plan.balance == "none" and not plan.singles
    assert "cannot take the image, text features alone" in capsys.readouterr().out
    kwargs = dict(image="small_cnn", text="gru", fusion="cross_attention", image_shape=(16, 16, 3), text_length=6,
                  vocab_size=50, num_classes=2, compile=False)
    with pytest.raises(ValueError, match=r"the text features \(text\) cannot be trained alone with fusion "
                                         r"'cross_attention'"):
        balance.build_single_model(kwargs, {"image": "image", "text": "text"}, "text", "cross_attention")
    # keep_best_of: all compares on validation data.
    with pytest.raises(ConfigError, match=r"train.keep_best_of: all compares the models on validation data; set data.val"):
        train(run_config(tmp_path, train__keep_best_of="all", data__val=None), verbose=0)
