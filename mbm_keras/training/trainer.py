"""`train(config)`: data -> preprocessor -> model -> fit -> a run folder.

The run folder holds, when training ends: `model.keras` (last epoch),
`best.keras` (best epoch by `train.monitor`), `config.json` (the full config,
defaults filled in), `preprocessor.json` + `vocabulary.txt`, `labels.json`,
`history.csv` and TensorBoard logs under `logs/`. `backup/` lets a killed run
resume from its last finished epoch when started again; it is removed when the
run completes.
"""

import json
import os

from mbm_keras.training.config import load_config


def _write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


def train(config, epochs=None, output=None, verbose="auto"):
    """Trains the model a config describes and writes the run folder.

    Args:
        config: a YAML/JSON path or a dict (see `load_config`).
        epochs: overrides `train.epochs`.
        output: overrides `output`.
        verbose: Keras' fit verbosity ("auto", 0, 1, 2).

    Returns:
        dict with `output`, `history` (per-epoch metrics) and `model` (the trained model).

    Example:
        >>> result = train("run.yaml", epochs=3)
        >>> result["history"]["val_accuracy"][-1]
    """
    import keras

    from mbm_keras import build_fusion_model
    from mbm_keras.data import fit_preprocessor, make_dataset

    config = load_config(config)
    if epochs is not None:
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int. Received: epochs={epochs!r}")
        config["train"]["epochs"] = epochs
    if output is not None:
        config["output"] = os.path.abspath(output)
    data, model_cfg, train_cfg, out = config["data"], config["model"], config["train"], config["output"]
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(train_cfg["seed"])

    pre = fit_preprocessor(data["train"], data["columns"], **data["preprocessing"])
    common = dict(
        preprocessor=pre,
        batch_size=data["batch_size"],
        seed=train_cfg["seed"],
        missing_modalities=data["missing_modalities"],
        cache=data["cache"],
        on_error=data["on_error"],
    )
    train_ds = make_dataset(
        data["train"], training=True, augment=data["augment"], modality_dropout=data["modality_dropout"], **common
    )
    val_ds = make_dataset(data["val"], **common) if data["val"] else None

    model_kwargs = {k: v for k, v in model_cfg.items() if v is not None}
    model = build_fusion_model(
        **model_kwargs,
        **pre.model_kwargs(),
        missing_modalities=data["missing_modalities"],
        learning_rate=train_cfg["learning_rate"],
    )
    monitor = train_cfg["monitor"] or ("val_loss" if val_ds is not None else "loss")
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "best.keras"), monitor=monitor, save_best_only=True),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, "logs")),
    ]
    if train_cfg["early_stopping_patience"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=train_cfg["early_stopping_patience"], restore_best_weights=True)
        )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=train_cfg["epochs"],
        callbacks=callbacks,
        shuffle=False,  # make_dataset reshuffles each epoch itself
        verbose=verbose,
    )

    tmp_model = os.path.join(out, ".model.keras.tmp.keras")
    model.save(tmp_model)
    os.replace(tmp_model, os.path.join(out, "model.keras"))
    pre.save(out)
    if pre.labels is not None and pre.labels.classes is not None:
        _write_json(os.path.join(out, "labels.json"), pre.labels.classes)
    _write_json(os.path.join(out, "config.json"), config)
    return {"output": out, "history": history.history, "model": model}
