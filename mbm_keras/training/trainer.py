"""`train(config)`: data -> preprocessor -> model -> fit -> a run folder.

The run folder holds, when training ends: `model.keras` (last epoch),
`best.keras` (best epoch by `train.monitor`, over both stages), `config.json` (the full config,
defaults filled in), `preprocessor.json` + `vocabulary.txt`, `labels.json`,
`history.csv` and TensorBoard logs under `logs/`. `backup-stage1/` (and
`backup-stage2/` when fine-tuning) let a killed run resume from its last
finished epoch when started again; they are removed when a stage completes.
`.mbm_keras_run` marks the folder as this run's (see `run_folder.py`): a
folder holding another run, a finished run or foreign files is refused.
"""

import functools
import os

from mbm_keras.run import Run
from mbm_keras.training.config import load_config


def _resume_stage(out):
    """The stage ("stage1"/"stage2") whose BackupAndRestore backup is in `out`, or None."""
    for stage in ("stage2", "stage1"):
        if os.path.isfile(os.path.join(out, f"backup-{stage}", "training_metadata.json")):
            return stage
    return None


def train(config, epochs=None, output=None, strategy=None, verbose="auto", restart=False, overwrite=False):
    """Trains the model a config describes and writes the run folder.

    Args:
        config: a YAML/JSON path or a dict (see `load_config`).
        epochs: overrides `train.epochs`.
        output: overrides `output`.
        strategy: overrides `train.strategy` ("auto", "cpu", "mirrored", "tpu",
            "multi_worker").
        verbose: Keras' fit verbosity ("auto", 0, 1, 2).
        restart: discard the backup of a killed run in the output folder and
            train from scratch (a killed run started again with another
            config or data is refused otherwise).
        overwrite: replace the output folder as a whole, whatever it holds
            (a finished run or foreign files are refused otherwise).

    Returns:
        dict with `output`, `history` (per-epoch metrics) and `model` (the trained model).

    Raises:
        ConfigError: a key or value of the config is invalid.
        RunFolderError: the output folder holds a finished run or foreign files.
        ResumeMismatchError: it holds a killed run with another config or data.
        TrainingDiverged: the loss became NaN or infinite (nothing of that epoch is saved).
        DataError: a row's file could not be decoded while training (verify="header"/"none").

    Example:
        >>> result = train("run.yaml", epochs=3)
        >>> result["history"]["val_accuracy"][-1]
    """
    import keras

    from mbm_keras import build_fusion_model, get_head, unfreeze_backbone
    from mbm_keras.data import fit_preprocessor, make_dataset
    import tensorflow as tf  # the data pipeline's errors

    from mbm_keras.data.manifest import DataError
    from mbm_keras.deploy.raw_inputs import explain
    from mbm_keras.training.callbacks import (
        BestModelCheckpoint,
        EpochLog,
        ReseedEachEpoch,
        ResumableEarlyStopping,
        StopOnNonFiniteLoss,
    )
    from mbm_keras.training.run_folder import prepare_run_folder
    from mbm_keras.training.loop import distributed_fit, is_chief
    from mbm_keras.training.optimizer import make_optimizer
    from mbm_keras.training.strategy import STRATEGIES, get_strategy

    protected = [] if isinstance(config, dict) else [os.path.abspath(os.fspath(config))]
    config = load_config(config)
    if epochs is not None:
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int. Received: epochs={epochs!r}")
        config["train"]["epochs"] = epochs
    if output is not None:
        config["output"] = os.path.abspath(output)
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={strategy!r}")
        config["train"]["strategy"] = strategy
    data, model_cfg, train_cfg, out = config["data"], config["model"], config["train"], config["output"]
    # First: MultiWorkerMirroredStrategy must be made before other TF work.
    strategy, used = get_strategy(train_cfg["strategy"])
    if not is_chief(strategy):
        # Every worker trains and checkpoints (so each can resume), but only the
        # chief writes the run folder; the others keep theirs beside it.
        task = strategy.cluster_resolver
        out = os.path.join(out, "workers", f"{task.task_type}-{task.task_id}")
    protected += [data[k] for k in ("train", "val") if data[k]]
    prepare_run_folder(out, config, chief=is_chief(strategy), restart=restart, overwrite=overwrite, protected=protected)
    keras.utils.set_random_seed(train_cfg["seed"])

    static = used == "tpu" or train_cfg["jit_compile"]  # XLA wants static batch shapes
    from mbm_keras.fusion_model import normalize_features

    features = normalize_features(model_cfg["features"]) if model_cfg["features"] else {}
    pre = fit_preprocessor(data["train"], data["columns"], {k: f["modality"] for k, f in features.items()},
                           share=model_cfg["share_encoders"], **data["preprocessing"])
    common = dict(
        preprocessor=pre,
        batch_size=data["batch_size"],
        seed=train_cfg["seed"],
        missing_modalities=data["missing_modalities"],
        cache=data["cache"],
        on_error=data["on_error"],
        verify=data["verify"],
        allow_outside_root=data["allow_outside_root"],
        drop_remainder=static,
    )
    # A run that was killed resumes at the epoch its backup reached; the data
    # order and random draws of every epoch depend only on (seed, epoch), and
    # ReseedEachEpoch tells the dataset which epoch starts.
    resume_stage = _resume_stage(out)
    train_ds = make_dataset(
        data["train"],
        training=True,
        augment=data["augment"],
        modality_dropout=data["modality_dropout"],
        **common,
    )
    val_ds = make_dataset(data["val"], **common) if data["val"] else None

    if used == "tpu" and not (data["batch_size"] % strategy.num_replicas_in_sync == 0):
        raise ValueError(f"data.batch_size={data['batch_size']} must divide evenly over {strategy.num_replicas_in_sync} TPU cores")
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if train_cfg["mixed_precision"]:
            keras.mixed_precision.set_global_policy(train_cfg["mixed_precision"])
        with strategy.scope():
            model = build_fusion_model(
                **{k: v for k, v in model_cfg.items() if v is not None},
                **pre.model_kwargs(),
                missing_modalities=data["missing_modalities"],
                compile=False,
            )
            head = get_head(pre.model_kwargs().get("head", "softmax"))

            steps_per_epoch = int(train_ds.cardinality())

            def compile_model(learning_rate, epochs):
                optimizer = make_optimizer(
                    train_cfg["optimizer"], learning_rate, train_cfg["lr_schedule"],
                    total_steps=epochs * steps_per_epoch,
                    warmup_steps=min(train_cfg["warmup_epochs"], epochs) * steps_per_epoch,
                    weight_decay=train_cfg["weight_decay"],
                )
                model.compile(
                    optimizer=optimizer,
                    loss=head.loss(),
                    metrics=head.metrics(),
                    jit_compile=train_cfg["jit_compile"] or used == "tpu",
                    steps_per_execution=train_cfg["steps_per_execution"],
                )

            compile_model(train_cfg["learning_rate"], train_cfg["epochs"])
        monitor = train_cfg["monitor"] or ("val_loss" if val_ds is not None else "loss")

        def callbacks(stage):
            # The backup comes last: whatever an epoch writes is on disk before the
            # backup marks the epoch done, so a kill in between repeats the epoch
            # (its log row is replaced) instead of losing its outputs.
            history_path = os.path.join(out, "history.csv")
            cbs = [
                StopOnNonFiniteLoss(),  # first: raises before any callback sees a non-finite epoch
                ReseedEachEpoch(train_cfg["seed"], datasets=[train_ds]),
                BestModelCheckpoint(os.path.join(out, "best.keras"), monitor, history_path),
                EpochLog(history_path),
                keras.callbacks.TensorBoard(os.path.join(out, "logs")),
            ]
            if train_cfg["early_stopping_patience"]:
                cbs.append(ResumableEarlyStopping(
                    history_path, first_epoch=0 if stage == "stage1" else train_cfg["epochs"],
                    monitor=monitor, patience=train_cfg["early_stopping_patience"], verbose=1,
                ))
            cbs.append(keras.callbacks.BackupAndRestore(os.path.join(out, f"backup-{stage}"), double_checkpoint=True))
            return cbs

        print(f"Training on strategy '{used}' ({strategy.num_replicas_in_sync} replica(s))"
              + (f", {train_cfg['mixed_precision']}" if train_cfg["mixed_precision"] else ""), flush=True)
        if used == "multi_worker":  # Keras' fit fails under MultiWorkerMirroredStrategy
            run_fit = functools.partial(distributed_fit, model, strategy, validation_data=val_ds, verbose=verbose)
        else:  # make_dataset reshuffles itself
            run_fit = functools.partial(model.fit, validation_data=val_ds, shuffle=False, verbose=verbose)

        def fit(*args, **kwargs):
            try:
                return run_fit(*args, **kwargs)
            except tf.errors.InvalidArgumentError as e:
                reason = explain(e)
                if "make_dataset:" in reason:  # a file found unreadable while streaming
                    raise DataError(reason) from None
                raise
        history = {}
        if resume_stage != "stage2":  # stage 1 finished before the crash otherwise
            history = dict(fit(train_ds, epochs=train_cfg["epochs"], callbacks=callbacks("stage1")).history)
        fine_tune = train_cfg["fine_tune"]
        if fine_tune:
            with strategy.scope():
                unfreeze_backbone(model, fine_tune.get("num_layers"), recompile=False)
                compile_model(fine_tune.get("learning_rate", train_cfg["learning_rate"] / 10), fine_tune["epochs"])
            total = train_cfg["epochs"] + fine_tune["epochs"]
            print(f"Fine-tuning: {fine_tune['epochs']} epoch(s), top {fine_tune.get('num_layers') or 'all'} backbone layers",
                  flush=True)
            stage2 = fit(train_ds, epochs=total, initial_epoch=train_cfg["epochs"], callbacks=callbacks("stage2"))
            for k, v in stage2.history.items():
                history.setdefault(k, []).extend(v)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    Run(out).save(model, pre, config)
    return {"output": out, "history": history, "model": model, "strategy": used}
