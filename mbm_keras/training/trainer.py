"""`train(config)`: data -> preprocessor -> model -> fit -> a run folder.

The run folder holds, when training ends: `model.keras` (last epoch),
`best.keras` (best epoch by `train.monitor`, over both stages), `config.json` (the full config,
defaults filled in), `preprocessor.json` + `vocabulary.txt`, `labels.json`,
`history.csv` and TensorBoard logs under `logs/`. `backup-stage1/` (and
`backup-stage2/` when fine-tuning) let a killed run resume from its last
finished epoch when started again; they are removed when a stage completes.
With `train.balance` / `train.keep_best_of` (see `balance.py`) it also holds
`summary.json`, `singles/<modality>/` (each modality's own model, trained
first; `backup-single-<modality>/` while it trains) and, when a single model
was kept, `fusion/`.
`.mbm_keras_run` marks the folder as this run's (see `run_folder.py`): a
folder holding another run, a finished run or foreign files is refused.
"""

import os
import shutil

from mbm_keras.io import write_json
from mbm_keras.run import Run
from mbm_keras.training.balance import (
    FUSION,
    SINGLES,
    SUMMARY,
    GradientModulation,
    build_single_model,
    copy_encoders,
    format_summary,
    make_plan,
    select_inputs,
    single_folder,
    validation_summary,
)
from mbm_keras.training.config import ConfigError, load_config


def _resume_stage(out):
    """The stage ("probe"/"stage1"/"stage2") whose BackupAndRestore backup is in `out`, or None."""
    for stage in ("stage2", "stage1", "probe"):
        if os.path.isfile(os.path.join(out, f"backup-{stage}", "training_metadata.json")):
            return stage
    return None


DEFAULT_PATIENCE = 5  # early stopping's patience when the config sets none and there is validation data


def _freeze_encoders(model, features):
    """Freezes every `<feature>_encoder` of `model`; returns `(layer, trainable)`
    of every layer inside them, to put back (a frozen backbone stays frozen)."""
    before = []
    for feature in features:
        try:
            encoder = model.get_layer(f"{feature}_encoder")
        except ValueError:  # shares another feature's encoder
            continue
        before += [(layer, layer.trainable) for layer in encoder._flatten_layers(include_self=True, recursive=True)]
        encoder.trainable = False
    return before


def _restore_best(model, out):
    """Loads `out/best.keras`'s weights into `model` (same architecture), when it exists."""
    best = os.path.join(out, "best.keras")
    if os.path.isfile(best):
        model.load_weights(best)


def _kept_epoch(history, monitor, validated):
    """What `summary.json` says of the epoch the run keeps: the best by
    `monitor` when there was validation data, else the last."""
    values = history.get(monitor) or []
    total = len(next(iter(history.values()), []))
    if not validated or not values:
        return {"kept": total, "of": total, "why": "the last epoch (no validation data)"}
    import math

    finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not finite:
        return {"kept": total, "of": total, "why": f"the last epoch ({monitor} was never finite)"}
    pick = max if monitor.endswith(("accuracy", "auc", "precision", "recall", "map", "mrr")) else min
    value, index = pick(finite)
    return {"kept": index + 1, "of": total, "monitor": monitor, "value": float(value),
            "why": f"the best validation epoch by {monitor}"}


def pretrain(config, epochs=None, output=None, strategy=None, verbose="auto", restart=False, overwrite=False):
    """Pretrains the model section's encoders as autoencoders on data.train
    (no labels read) and writes the run folder, with
    `encoders/<feature>.weights.h5` for a classifier's
    `model.<modality>_kwargs.weights` and `reconstruction.png`.

    The config is a run config (`task.kind: autoencoder`, or no task
    section); `task.noise` and `task.mask_rate` set the corruption. Resume,
    strategies and progress output are those of `train`.

    Args:
        config: a YAML/JSON path or a dict (see `load_config`).
        epochs, output, strategy, verbose, restart, overwrite: as for `train`.

    Example:
        >>> run = pretrain("pretrain.yaml")
        >>> run["summary"]["encoders"]["image"]
        'runs/pretrain/encoders/image.weights.h5'
    """
    kind = load_config(config)["task"]["kind"]
    if kind not in ("classification", "autoencoder"):  # classification: the default of a config without task
        raise ConfigError(f"pretrain trains autoencoders; this config's task.kind is {kind!r} (use train)")
    return train(config, epochs=epochs, output=output, strategy=strategy, verbose=verbose, restart=restart,
                 overwrite=overwrite, kind="autoencoder")


def train(config, epochs=None, output=None, strategy=None, verbose="auto", restart=False, overwrite=False, kind=None):
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
        kind: overrides `task.kind` ("autoencoder" is what `pretrain` sets).

    Returns:
        dict with `output`, `history` (per-epoch metrics) and `model` (the trained model).

    Raises:
        ConfigError: a key or value of the config is invalid.
        RunFolderError: the output folder holds a finished run or foreign files.
        ResumeMismatchError: it holds a killed run with another config or data.
        TrainingDiverged: the loss became NaN or infinite (nothing of that epoch is saved).
        DataError: a row's file could not be read or decoded while training (data.verify "none", the
            default, or "header").

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
    from mbm_keras.training import autoencoder_task, retrieval_task, transcription_task
    from mbm_keras.training.holdout import hold_out
    from mbm_keras.training.run_folder import prepare_run_folder
    from mbm_keras.training.loop import distributed_fit, is_chief
    from mbm_keras.training.optimizer import make_optimizer
    from mbm_keras.training.strategy import STRATEGIES, get_strategy, worker_position

    protected = [] if isinstance(config, dict) else [os.path.abspath(os.fspath(config))]
    config = load_config(config)
    if kind is not None and config["task"]["kind"] != kind:
        config = load_config({**config, "task": {**config["task"], "kind": kind}})
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
    from mbm_keras.data.shards import is_shard_folder

    hosts = getattr(strategy.extended, "num_hosts", 1) if used == "tpu" else 1
    if hosts > 1 and any(is_shard_folder(data[k]) for k in ("train", "val") if data[k]):
        # One host feeds all its cores from one pipeline (as mirrored does); a pod's hosts would each need
        # their own shards handed to Keras' fit, which this package cannot test without a pod.
        raise ValueError(f"train.strategy 'tpu' on {hosts} hosts with a shard folder as data.train/data.val is not "
                         f"supported yet; train from the manifest, or use one TPU host, or strategy multi_worker")
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
    task = config["task"]
    retrieval = task["kind"] == "retrieval"  # two towers trained contrastively (training/retrieval_task.py)
    transcription = task["kind"] == "transcription"  # a CTC model (training/transcription_task.py)
    autoencoder = task["kind"] == "autoencoder"  # encoders pretrained without labels (training/autoencoder_task.py)
    preprocessing = ({**data["preprocessing"], "label_type": "transcript", "audio_whole_clip": True} if transcription
                     else data["preprocessing"])
    columns = {k: v for k, v in data["columns"].items() if k != "label"} if autoencoder else data["columns"]
    # Validation by default: without data.val, a share of the training rows (training/holdout.py).
    held = hold_out(data, out, train_cfg["seed"], label=None if autoencoder else data["columns"].get("label"))
    print(held.note, flush=True)
    data = {**data, "train": held.train, "val": held.val}
    pre = fit_preprocessor(data["train"], columns, {k: f["modality"] for k, f in features.items()},
                           share=model_cfg["share_encoders"], **preprocessing)
    plan = make_plan({**train_cfg, "balance": "none", "keep_best_of": "fusion"} if retrieval or transcription or autoencoder
                     else train_cfg, data, pre.feature_modalities, model_cfg["fusion"], validation=bool(data["val"]))
    if plan.keep == "all" and not data["val"]:
        raise ConfigError("config: train.keep_best_of: all compares the models on validation data; set data.val "
                          "(or leave data.val_split above 0 with enough rows)")
    common = dict(
        preprocessor=pre,
        batch_size=data["batch_size"],
        seed=train_cfg["seed"],
        missing_modalities=plan.masks,
        cache=data["cache"],
        on_error=data["on_error"],
        verify=data["verify"],
        allow_outside_root=data["allow_outside_root"],
        drop_remainder=static,
    )
    if transcription:  # rows whose transcript cannot fit the model's frames are row errors (named, or skipped)
        pre.labels.max_frames = transcription_task.frames(task, model_cfg, pre)
        audio_feature, context_feature = transcription_task.roles(task, model_cfg)
        common["missing_modalities"] = [context_feature] if context_feature else False  # an empty context: none
        for key in ("train", "val"):
            if data[key] and not is_shard_folder(data[key]):
                transcription_task.warn_long_contexts(data[key], pre, context_feature)
    # A run that was killed resumes at the epoch its backup reached; the data
    # order and random draws of every epoch depend only on (seed, epoch), and
    # ReseedEachEpoch tells the dataset which epoch starts.
    resume_stage = _resume_stage(out)
    def own_shards(path):  # under multi_worker each worker reads its own shards of a shard folder
        return {"workers": worker_position(strategy)} if used == "multi_worker" and is_shard_folder(path) else {}

    train_ds = make_dataset(
        data["train"],
        training=True,
        augment=data["augment"],
        modality_dropout=plan.dropout,
        shuffle=data["shuffle"],
        **common,
        **own_shards(data["train"]),
    )
    single_ds = train_ds
    if plan.singles and plan.dropout:  # the single models see their modality in every row
        single_ds = make_dataset(data["train"], training=True, augment=data["augment"], shuffle=data["shuffle"],
                                 **common, **own_shards(data["train"]))
    val_ds = make_dataset(data["val"], **common, **own_shards(data["val"])) if data["val"] else None
    if retrieval:  # batches of (features, what makes two rows match)
        from mbm_keras.retrieval import contrastive_dataset

        train_ds = single_ds = contrastive_dataset(train_ds, task["supervised"])
        val_ds = contrastive_dataset(val_ds, task["supervised"]) if val_ds is not None else None
    if transcription:  # batches of ({audio, context}, padded character ids)
        names = [n for n in (audio_feature, context_feature) if n]
        train_ds = single_ds = transcription_task.select_inputs(train_ds, names)
        val_ds = transcription_task.select_inputs(val_ds, names) if val_ds is not None else None
    if autoencoder:  # batches of (the features, zeros): the model's output is each example's loss
        names = list(pre.features)
        train_ds = single_ds = autoencoder_task.select_inputs(train_ds, names)
        val_ds = autoencoder_task.select_inputs(val_ds, names) if val_ds is not None else None

    if used == "tpu" and not (data["batch_size"] % strategy.num_replicas_in_sync == 0):
        raise ValueError(f"data.batch_size={data['batch_size']} must divide evenly over {strategy.num_replicas_in_sync} TPU cores")
    model_kwargs = {**{k: v for k, v in model_cfg.items() if v is not None}, **pre.model_kwargs(),
                    "missing_modalities": plan.masks, "compile": False}
    head = None if transcription or autoencoder else get_head(pre.model_kwargs().get("head", "softmax"))
    monitor = train_cfg["monitor"] or ("val_loss" if val_ds is not None else "loss")
    # Early stopping: the config's patience, else DEFAULT_PATIENCE epochs whenever there is validation data.
    patience = train_cfg["early_stopping_patience"] or (DEFAULT_PATIENCE if val_ds is not None else None)
    steps_per_epoch = int(train_ds.cardinality())
    previous_policy = keras.mixed_precision.global_policy()

    def compile_model(model, learning_rate, epochs, trainee=None):
        optimizer = make_optimizer(
            train_cfg["optimizer"], learning_rate, train_cfg["lr_schedule"],
            total_steps=epochs * steps_per_epoch,
            warmup_steps=min(train_cfg["warmup_epochs"], epochs) * steps_per_epoch,
            weight_decay=train_cfg["weight_decay"],
        )
        if retrieval:
            loss, metrics = retrieval_task.loss_and_metrics(task)
        elif transcription:
            loss, metrics = transcription_task.loss_and_metrics()
        elif autoencoder:
            loss, metrics = autoencoder_task.loss_and_metrics()
        else:
            loss, metrics = head.loss(), head.metrics()
        for m in [model] + ([trainee] if trainee is not None else []):
            m.compile(
                optimizer=optimizer,
                loss=loss,
                metrics=metrics,
                jit_compile=train_cfg["jit_compile"] or used == "tpu",
                steps_per_execution=train_cfg["steps_per_execution"],
            )

    def callbacks(stage, folder, dataset, first_epoch=0):
        # The backup comes last: whatever an epoch writes is on disk before the
        # backup marks the epoch done, so a kill in between repeats the epoch
        # (its log row is replaced) instead of losing its outputs.
        history_path = os.path.join(folder, "history.csv")
        cbs = [
            StopOnNonFiniteLoss(),  # first: raises before any callback sees a non-finite epoch
            ReseedEachEpoch(train_cfg["seed"], datasets=[dataset]),
            BestModelCheckpoint(os.path.join(folder, "best.keras"), monitor, history_path),
            EpochLog(history_path),
            keras.callbacks.TensorBoard(os.path.join(folder, "logs")),
        ]
        if patience:
            cbs.append(ResumableEarlyStopping(
                history_path, first_epoch=first_epoch, monitor=monitor, patience=patience, verbose=1,
            ))
        # A single model's backup stays until the model is saved (see _train_single): a kill in between resumes.
        cbs.append(keras.callbacks.BackupAndRestore(os.path.join(out, f"backup-{stage}"), double_checkpoint=True,
                                                    delete_checkpoint=not stage.startswith("single-")))
        return cbs

    print(f"Training on strategy '{used}' ({strategy.num_replicas_in_sync} replica(s))"
          + (f", {train_cfg['mixed_precision']}" if train_cfg["mixed_precision"] else "")
          + (f"; {plan.describe()}" if len(plan.groups) > 1 else ""), flush=True)

    def fit(model, *args, val=val_ds, **kwargs):
        try:
            if used == "multi_worker":  # Keras' fit fails under MultiWorkerMirroredStrategy
                return distributed_fit(model, strategy, *args, validation_data=val, verbose=verbose, **kwargs)
            # make_dataset reshuffles itself
            return model.fit(*args, validation_data=val, shuffle=False, verbose=verbose, **kwargs)
        except tf.errors.InvalidArgumentError as e:
            reason = explain(e)
            if "make_dataset:" in reason:
                one_file = "too many rows failed" not in reason  # else: a count, said as it is
                for ds in (args[0] if args else kwargs.get("x"), val) if one_file else ():
                    # a file found unreadable while streaming: the decoder's own reason, from here
                    explain_failure = getattr(getattr(ds, "report", None), "explain_failure", None)
                    if explain_failure is not None and explain_failure():
                        reason = explain_failure()
                        break
                raise DataError(reason) from None
            raise

    singles = {}
    try:
        if train_cfg["mixed_precision"]:
            keras.mixed_precision.set_global_policy(train_cfg["mixed_precision"])
        if plan.singles:  # each modality's own model, its own run folder under singles/
            for modality, names in plan.groups.items():
                singles[modality] = _train_single(  # masks only for the data's own empty cells
                    modality, names, plan, {**model_kwargs, "missing_modalities": data["missing_modalities"]}, pre, strategy, out, single_ds, val_ds,
                    compile_model, callbacks, fit, train_cfg, model_cfg["fusion"])
        plain = None  # transcription with a context: the model without it, trained first (and compared with)
        if transcription and context_feature and val_ds is not None:
            plain = _train_single(
                audio_feature, [audio_feature], plan, model_kwargs, pre, strategy, out, train_ds, val_ds,
                compile_model, callbacks, fit, train_cfg, None,
                build=lambda: transcription_task.build_from_config(task, model_cfg, pre, with_context=False))
        # Each model's initial weights depend on the seed alone, not on what
        # was built before it (a resumed run loads finished single models).
        keras.utils.set_random_seed(train_cfg["seed"])
        with strategy.scope():
            if retrieval:
                model = retrieval_task.build_from_config(task, model_cfg, model_kwargs)
            elif transcription:
                model = transcription_task.build_from_config(task, model_cfg, pre, audio_from=plain)
            elif autoencoder:
                model = autoencoder_task.build_from_config(task, model_cfg, pre, train_cfg["seed"])
            else:
                model = build_fusion_model(**model_kwargs)
            if plan.balance in ("unimodal", "probe"):  # a resumed stage's backup overrides these
                for modality, names in plan.groups.items():
                    copy_encoders(singles[modality], model, names)
            trainee = GradientModulation(model, plan.groups, plan.alpha) if plan.balance == "ogm_ge" else None
            compile_model(model, train_cfg["learning_rate"], train_cfg["epochs"], trainee)
        trainee = trainee or model
        if transcription:
            print(f"Training the CTC model ({len(pre.labels.classes)} characters, {pre.labels.max_frames} frames"
                  + (f", context {context_feature!r} by cross-attention)" if context_feature else ")"), flush=True)
        elif autoencoder:
            print(f"Pretraining {', '.join(f'{n} ({m})' for n, m in pre.feature_modalities.items())} as autoencoders",
                  flush=True)
        elif len(plan.groups) > 1:
            print(f"Training the fusion ({model_cfg['fusion']})", flush=True)
        history = {}
        probe = plan.probe_epochs(train_cfg["epochs"])  # train.balance probe: the frozen-encoder stage first
        if probe and resume_stage not in ("stage1", "stage2"):
            with strategy.scope():
                frozen = _freeze_encoders(model, pre.features)
                compile_model(model, train_cfg["learning_rate"], probe)
            print(f"Linear probe: {probe} epoch(s) with the single models' encoders frozen", flush=True)
            history = dict(fit(model, train_ds, epochs=probe, callbacks=callbacks("probe", out, train_ds)).history)
            _restore_best(model, out)  # fine-tuning starts from the probe's best epoch
            with strategy.scope():
                for layer, trainable in frozen:
                    layer.trainable = trainable
        end = probe + plan.tune_epochs(train_cfg["epochs"])  # the epoch after the fusion's own stages
        if probe and end > probe:
            with strategy.scope():
                compile_model(model, train_cfg["learning_rate"] / 10, end - probe)
            print(f"Fine-tuning the whole fusion at learning rate {train_cfg['learning_rate'] / 10:g}: "
                  f"{end - probe} epoch(s)", flush=True)
        if resume_stage != "stage2" and end > probe:  # stage 1 finished before the crash otherwise
            stage1 = fit(trainee, train_ds, epochs=end, initial_epoch=probe,
                         callbacks=callbacks("stage1", out, train_ds, first_epoch=probe))
            for k, v in stage1.history.items():
                history.setdefault(k, []).extend(v)
        fine_tune = train_cfg["fine_tune"]
        if fine_tune:
            with strategy.scope():
                unfreeze_backbone(model, fine_tune.get("num_layers"), recompile=False)
                compile_model(model, fine_tune.get("learning_rate", train_cfg["learning_rate"] / 10),
                              fine_tune["epochs"], None if trainee is model else trainee)
            total = end + fine_tune["epochs"]
            print(f"Fine-tuning: {fine_tune['epochs']} epoch(s), top {fine_tune.get('num_layers') or 'all'} backbone layers",
                  flush=True)
            stage2 = fit(trainee, train_ds, epochs=total, initial_epoch=end,
                         callbacks=callbacks("stage2", out, train_ds, first_epoch=end))
            for k, v in stage2.history.items():
                history.setdefault(k, []).extend(v)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    epoch = _kept_epoch(history, monitor, val_ds is not None)
    if val_ds is not None:
        _restore_best(model, out)  # model.keras: the best validation epoch
    if retrieval:
        supervised = task["supervised"] is not False and pre.labels is not None
        summary = retrieval_task.validation_scores(model, val_ds, supervised)
        if val_ds is not None and len(task["candidate"]) > 1:  # a fused candidate against each of its features
            scores = {}
            try:
                if train_cfg["mixed_precision"]:
                    keras.mixed_precision.set_global_policy(train_cfg["mixed_precision"])
                for feature in task["candidate"]:
                    singles[feature] = _train_single(
                        feature, task["query"] + [feature], plan, model_kwargs, pre, strategy, out, train_ds, val_ds,
                        compile_model, callbacks, fit, train_cfg, None,
                        build=lambda f=feature: retrieval_task.build_from_config({**task, "candidate": [f]},
                                                                                 model_cfg, model_kwargs))
                    scores[feature] = retrieval_task.validation_scores(singles[feature], val_ds, supervised)
            finally:
                keras.mixed_precision.set_global_policy(previous_policy)
            kept_feature = retrieval_task.keep_better(summary, scores)
            if kept_feature:
                plan.groups = {kept_feature: task["query"] + [kept_feature]}
                summary["kept_modality"] = kept_feature
    elif transcription:
        summary = transcription_task.validation_scores(model, val_ds, pre.labels.vocabulary, task["beam"])
        if plain is not None:
            plain_scores = transcription_task.validation_scores(
                plain, transcription_task.select_inputs(val_ds, [audio_feature]), pre.labels.vocabulary, task["beam"])
            if transcription_task.keep_better(summary, plain_scores, audio_feature):
                singles, plan.groups = {audio_feature: plain}, {audio_feature: [audio_feature]}
                summary["kept_modality"] = audio_feature
    elif autoencoder:
        summary = autoencoder_task.validation_scores(model, val_ds, names)
    else:
        summary = validation_summary(out, model, singles, plan, val_ds, head, measure=used != "multi_worker")
    summary["epoch"] = {**epoch, "model": "fusion"}
    summary["validation"] = held.summary
    kept = summary.get("kept_modality")
    if kept:  # the epoch of the model the run holds: the single model's own
        from mbm_keras.training.callbacks import read_history

        rows = read_history(os.path.join(out, SINGLES, kept, "history.csv"), 0, 1 << 30)
        single_history = {k: [r.get(k) for r in rows] for k in (rows[0] if rows else {})}
        summary["epoch"] = {**_kept_epoch(single_history, monitor, val_ds is not None), "model": kept}
        # keep_best_of: all, and a single model won: the run folder holds it, fusion/ the fusion
        Run(os.path.join(out, FUSION)).save(model, pre, config)
        if os.path.isfile(os.path.join(out, "best.keras")):
            os.replace(os.path.join(out, "best.keras"), os.path.join(out, FUSION, "best.keras"))
        model = singles[kept]
        Run(out).save(model, pre.subset(plan.groups[kept]), config)
        shutil.copyfile(os.path.join(out, SINGLES, kept, "model.keras"), os.path.join(out, "best.keras"))
    else:
        Run(out).save(model, pre, config)
    if autoencoder and is_chief(strategy):  # what a classifier's config takes: each encoder's weights
        encoder_files = autoencoder_task.save_encoders(model, names, out)
        summary["encoders"] = encoder_files
        summary["picture"] = autoencoder_task.save_picture(model, val_ds if val_ds is not None else train_ds, pre,
                                                           names, os.path.join(out, autoencoder_task.PICTURE))
    if is_chief(strategy):
        write_json(os.path.join(out, SUMMARY), summary)
        lines = (retrieval_task.format_scores(summary) if retrieval else
                 transcription_task.format_scores(summary) if transcription else
                 autoencoder_task.format_scores(summary, summary["encoders"]) if autoencoder else
                 format_summary(summary))
        print("\n".join(lines), flush=True)
    return {"output": out, "history": history, "model": model, "strategy": used, "summary": summary}


def _train_single(modality, names, plan, model_kwargs, pre, strategy, out, dataset, val_ds, compile_model, callbacks,
                  fit, train_cfg, fusion, build=None):
    """Trains (or, when a resumed run finished it, loads) the model of one
    modality's features alone; writes it to `singles/<modality>/` as a run
    folder (its best epoch by the monitor, else its last). `build`: makes
    that model (default: `build_single_model` of the fusion's arguments)."""
    import keras

    from mbm_keras.deploy.exporting import load_keras_file

    folder = single_folder(out, modality)
    done = os.path.join(folder, "model.keras")
    if os.path.isfile(done):
        print(f"Single model of {modality}: finished before, loaded from {done}", flush=True)
        return load_keras_file(done)
    keras.utils.set_random_seed(train_cfg["seed"])
    with strategy.scope():
        single = build() if build else build_single_model(model_kwargs, pre.feature_modalities, modality, fusion)
        compile_model(single, train_cfg["learning_rate"], train_cfg["epochs"])
    print(f"Training {modality} alone ({', '.join(names)}): {train_cfg['epochs']} epoch(s)", flush=True)
    inputs = list(single.input)
    os.makedirs(folder, exist_ok=True)
    mine = select_inputs(dataset, inputs)
    fit(single, mine, epochs=train_cfg["epochs"], callbacks=callbacks(f"single-{modality}", folder, mine),
        val=select_inputs(val_ds, inputs) if val_ds is not None else None)
    best = os.path.join(folder, "best.keras")
    if os.path.isfile(best):
        single = load_keras_file(best)
        os.remove(best)
    Run(folder).save(single, pre.subset(names))
    shutil.rmtree(os.path.join(out, f"backup-single-{modality}"), ignore_errors=True)  # kept until now (callbacks)
    return single
