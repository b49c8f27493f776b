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

import contextlib
import os
import shutil

from mbm_keras.io import write_json
from mbm_keras.run import Run
from mbm_keras.training.balance import FUSION, SINGLES, SUMMARY
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

    Examples:
        >>> run = pretrain("pretrain.yaml")
        >>> run["summary"]["encoders"]["image"]
        'runs/pretrain/encoders/image.weights.h5'
    """
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

    Examples:
        >>> result = train("run.yaml", epochs=3)
        >>> result["history"]["val_accuracy"][-1]
    """
    config, protected = _resolved(config, epochs, output, strategy, kind)
    run = _Training(config, protected, verbose, restart, overwrite)
    return run.train()


def _resolved(config, epochs, output, strategy, kind):
    """The loaded config with `train()`'s overrides, and the paths the run folder may not replace."""
    from mbm_keras.training.strategy import STRATEGIES

    from mbm_keras.tasks import DEFAULT_TASK

    protected = [] if isinstance(config, dict) else [os.path.abspath(os.fspath(config))]
    config = load_config(config)
    if kind is not None and config["task"]["kind"] not in (kind, DEFAULT_TASK):  # the default: no task section
        raise ConfigError(f"this config's task.kind is {config['task']['kind']!r}; {kind} runs need task.kind "
                          f"{kind} or no task section")
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
    return config, protected + [config["data"][k] for k in ("train", "val") if config["data"][k]]


class _Training:
    """One `train()` call: the strategy, the run folder, the data and the
    models, with the task (`mbm_keras/tasks/`) deciding what differs between
    kinds. `ctx` (a `TrainingContext`) is what the task sees."""

    def __init__(self, config, protected, verbose, restart, overwrite):
        import keras

        from mbm_keras.tasks import TrainingContext, get_task
        from mbm_keras.training.loop import is_chief
        from mbm_keras.training.run_folder import prepare_run_folder
        from mbm_keras.training.strategy import get_strategy

        self.task = get_task(config["task"]["kind"])
        self.verbose = verbose
        train_cfg = config["train"]
        # First: MultiWorkerMirroredStrategy must be made before other TF work.
        strategy, used = get_strategy(train_cfg["strategy"])
        _check_tpu_hosts(strategy, used, config["data"])
        out = config["output"]
        chief = is_chief(strategy)
        if not chief:
            # Every worker trains and checkpoints (so each can resume), but only the
            # chief writes the run folder; the others keep theirs beside it.
            worker = strategy.cluster_resolver
            out = os.path.join(out, "workers", f"{worker.task_type}-{worker.task_id}")
        prepare_run_folder(out, config, chief=chief, restart=restart, overwrite=overwrite, protected=protected)
        keras.utils.set_random_seed(train_cfg["seed"])
        self.ctx = TrainingContext(
            config=config, task=config["task"], data=config["data"], model_cfg=config["model"], train_cfg=train_cfg,
            out=out, strategy=strategy, used=used, chief=chief, train_single=self.train_single)
        self.previous_policy = keras.mixed_precision.global_policy()

    # ---- data ----
    def prepare_data(self):
        """The hold-out, the preprocessor, the plan and the datasets, on `ctx`."""
        from mbm_keras.data import fit_preprocessor
        from mbm_keras.fusion_model import normalize_features
        from mbm_keras.training.balance import make_plan
        from mbm_keras.training.holdout import hold_out

        ctx, task = self.ctx, self.task
        data, model_cfg, train_cfg = ctx.data, ctx.model_cfg, ctx.train_cfg
        features = normalize_features(model_cfg["features"]) if model_cfg["features"] else {}
        # Validation by default: without data.val, a share of the training rows (training/holdout.py).
        ctx.held = hold_out(data, ctx.out, train_cfg["seed"], label=task.holdout_label(data))
        print(ctx.held.note, flush=True)
        ctx.data = data = {**data, "train": ctx.held.train, "val": ctx.held.val}
        ctx.pre = fit_preprocessor(data["train"], task.columns(data), {k: f["modality"] for k, f in features.items()},
                                   share=model_cfg["share_encoders"], **task.preprocessing(data))
        plan_cfg = train_cfg if task.balances else {**train_cfg, "balance": "none", "keep_best_of": "fusion"}
        ctx.plan = make_plan(plan_cfg, data, ctx.pre.feature_modalities, model_cfg["fusion"],
                             validation=bool(data["val"]))
        if ctx.plan.keep == "all" and not data["val"]:
            raise ConfigError("config: train.keep_best_of: all compares the models on validation data; set data.val "
                              "(or leave data.val_split above 0 with enough rows)")
        ctx.common = dict(
            preprocessor=ctx.pre, batch_size=data["batch_size"], seed=train_cfg["seed"],
            missing_modalities=ctx.plan.masks, cache=data["cache"], on_error=data["on_error"], verify=data["verify"],
            allow_outside_root=data["allow_outside_root"],
            drop_remainder=ctx.used == "tpu" or train_cfg["jit_compile"],  # XLA wants static batch shapes
        )
        task.prepare(ctx)
        self.make_datasets()

    def make_datasets(self):
        from mbm_keras.data import make_dataset

        ctx, data = self.ctx, self.ctx.data
        train = dict(training=True, augment=data["augment"], shuffle=data["shuffle"], **ctx.common,
                     **self.own_shards(data["train"]))
        ctx.train_ds = make_dataset(data["train"], modality_dropout=ctx.plan.dropout, **train)
        # The single models see their modality in every row.
        ctx.single_ds = make_dataset(data["train"], **train) if ctx.plan.singles and ctx.plan.dropout else ctx.train_ds
        ctx.val_ds = (make_dataset(data["val"], **ctx.common, **self.own_shards(data["val"])) if data["val"]
                      else None)
        same = ctx.single_ds is ctx.train_ds
        ctx.train_ds = self.batches(ctx.train_ds)
        ctx.single_ds = ctx.train_ds if same else self.batches(ctx.single_ds)
        ctx.val_ds = self.batches(ctx.val_ds) if ctx.val_ds is not None else None
        strategy = ctx.strategy
        if ctx.used == "tpu" and not (data["batch_size"] % strategy.num_replicas_in_sync == 0):
            raise ValueError(f"data.batch_size={data['batch_size']} must divide evenly over "
                             f"{strategy.num_replicas_in_sync} TPU cores")

    def batches(self, dataset):
        """The task's batches of a `make_dataset` dataset, which keep its `report` (the rows read and failed)
        and `set_epoch` (the epoch's shuffle and random draws, see ReseedEachEpoch)."""
        from mbm_keras.data.pipeline import carry_attributes

        return carry_attributes(dataset, self.task.batches(self.ctx, dataset))

    def own_shards(self, path):
        """Under multi_worker each worker reads its own shards of a shard folder."""
        from mbm_keras.data.shards import is_shard_folder
        from mbm_keras.training.strategy import worker_position

        if self.ctx.used == "multi_worker" and is_shard_folder(path):
            return {"workers": worker_position(self.ctx.strategy)}
        return {}

    # ---- compiling and fitting ----
    def compile_model(self, model, learning_rate, epochs, trainee=None):
        from mbm_keras.training.optimizer import make_optimizer

        ctx, train_cfg = self.ctx, self.ctx.train_cfg
        steps_per_epoch = int(ctx.train_ds.cardinality())
        optimizer = make_optimizer(
            train_cfg["optimizer"], learning_rate, train_cfg["lr_schedule"],
            total_steps=epochs * steps_per_epoch,
            warmup_steps=min(train_cfg["warmup_epochs"], epochs) * steps_per_epoch,
            weight_decay=train_cfg["weight_decay"],
        )
        loss, metrics = self.task.loss_and_metrics(ctx)
        for m in [model] + ([trainee] if trainee is not None else []):
            m.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                      jit_compile=train_cfg["jit_compile"] or ctx.used == "tpu",
                      steps_per_execution=train_cfg["steps_per_execution"])

    def callbacks(self, stage, folder, dataset, first_epoch=0):
        # The backup comes last: whatever an epoch writes is on disk before the
        # backup marks the epoch done, so a kill in between repeats the epoch
        # (its log row is replaced) instead of losing its outputs.
        import keras

        from mbm_keras.training.callbacks import (
            BestModelCheckpoint,
            EpochLog,
            ReseedEachEpoch,
            ResumableEarlyStopping,
            StopOnNonFiniteLoss,
        )

        seed, history_path = self.ctx.train_cfg["seed"], os.path.join(folder, "history.csv")
        cbs = [
            StopOnNonFiniteLoss(),  # first: raises before any callback sees a non-finite epoch
            ReseedEachEpoch(seed, datasets=[dataset]),
            BestModelCheckpoint(os.path.join(folder, "best.keras"), self.monitor, history_path),
            EpochLog(history_path),
            keras.callbacks.TensorBoard(os.path.join(folder, "logs")),
        ]
        if self.patience:
            cbs.append(ResumableEarlyStopping(history_path, first_epoch=first_epoch, monitor=self.monitor,
                                              patience=self.patience, verbose=1))
        # A single model's backup stays until the model is saved (see train_single): a kill in between resumes.
        cbs.append(keras.callbacks.BackupAndRestore(os.path.join(self.ctx.out, f"backup-{stage}"),
                                                    double_checkpoint=True,
                                                    delete_checkpoint=not stage.startswith("single-")))
        return cbs

    def fit(self, model, dataset, val=None, **kwargs):
        """`model.fit` (or the distributed loop under multi_worker); a file found unreadable while streaming
        is a DataError with the decoder's own reason."""
        import tensorflow as tf  # the data pipeline's errors

        from mbm_keras.data.manifest import DataError
        from mbm_keras.codecs.asserts import explain
        from mbm_keras.training.loop import distributed_fit

        ctx = self.ctx
        try:
            if ctx.used == "multi_worker":  # Keras' fit fails under MultiWorkerMirroredStrategy
                return distributed_fit(model, ctx.strategy, dataset, validation_data=val, verbose=self.verbose,
                                       **kwargs)
            # make_dataset reshuffles itself
            return model.fit(dataset, validation_data=val, shuffle=False, verbose=self.verbose, **kwargs)
        except tf.errors.InvalidArgumentError as e:
            reason = explain(e)
            if "make_dataset:" not in reason:
                raise
            one_file = "too many rows failed" not in reason  # else: a count, said as it is
            for ds in (dataset, val) if one_file else ():
                explain_failure = getattr(getattr(ds, "report", None), "explain_failure", None)
                if explain_failure is not None and explain_failure():
                    reason = explain_failure()
                    break
            raise DataError(reason) from None

    def train_single(self, modality, names, build=None, dataset=None):
        """Trains (or, when a resumed run finished it, loads) the model of
        `names` alone, as the run's other models train; writes it to
        `singles/<modality>/` as a run folder (its best epoch by the monitor,
        else its last). `build`: makes that model (default: the fusion's
        arguments for those features, `build_single_model`)."""
        import keras

        from mbm_keras.run import Run, load_keras_file
        from mbm_keras.training.balance import build_single_model, select_inputs, single_folder

        ctx, train_cfg = self.ctx, self.ctx.train_cfg
        folder = single_folder(ctx.out, modality)
        done = os.path.join(folder, "model.keras")
        if os.path.isfile(done):
            print(f"Single model of {modality}: finished before, loaded from {done}", flush=True)
            return load_keras_file(done)
        keras.utils.set_random_seed(train_cfg["seed"])
        with self.mixed_precision(), ctx.strategy.scope():
            single = build() if build else build_single_model(
                {**ctx.model_kwargs, "missing_modalities": ctx.data["missing_modalities"]},  # the data's own masks
                ctx.pre.feature_modalities, modality, ctx.model_cfg["fusion"])
            self.compile_model(single, train_cfg["learning_rate"], train_cfg["epochs"])
        print(f"Training {modality} alone ({', '.join(names)}): {train_cfg['epochs']} epoch(s)", flush=True)
        inputs = list(single.input)
        os.makedirs(folder, exist_ok=True)
        mine = select_inputs(dataset if dataset is not None else ctx.single_ds, inputs)
        with self.mixed_precision():
            self.fit(single, mine, epochs=train_cfg["epochs"], callbacks=self.callbacks(f"single-{modality}", folder, mine),
                     val=select_inputs(ctx.val_ds, inputs) if ctx.val_ds is not None else None)
        best = os.path.join(folder, "best.keras")
        if os.path.isfile(best):
            single = load_keras_file(best)
            os.remove(best)
        Run(folder).save(single, ctx.pre.subset(names))
        shutil.rmtree(os.path.join(ctx.out, f"backup-single-{modality}"), ignore_errors=True)  # kept until now
        return single

    @contextlib.contextmanager
    def mixed_precision(self):
        """A context: train.mixed_precision's policy inside, the caller's outside."""
        import keras

        try:
            if self.ctx.train_cfg["mixed_precision"]:
                keras.mixed_precision.set_global_policy(self.ctx.train_cfg["mixed_precision"])
            yield
        finally:
            keras.mixed_precision.set_global_policy(self.previous_policy)

    # ---- the run ----
    def train(self):
        ctx, task = self.ctx, self.task
        self.prepare_data()
        train_cfg = ctx.train_cfg
        ctx.model_kwargs = {
            **{k: v for k, v in ctx.model_cfg.items() if v is not None}, **ctx.pre.model_kwargs(),
            "missing_modalities": ctx.plan.masks, "compile": False}
        self.monitor = train_cfg["monitor"] or ("val_loss" if ctx.val_ds is not None else "loss")
        # Early stopping: the config's patience, else DEFAULT_PATIENCE epochs whenever there is validation data.
        self.patience = train_cfg["early_stopping_patience"] or (DEFAULT_PATIENCE if ctx.val_ds is not None else None)
        plan = ctx.plan
        print(f"Training on strategy '{ctx.used}' ({ctx.strategy.num_replicas_in_sync} replica(s))"
              + (f", {train_cfg['mixed_precision']}" if train_cfg["mixed_precision"] else "")
              + (f"; {plan.describe()}" if len(plan.groups) > 1 else ""), flush=True)
        if plan.singles:  # each modality's own model, its own run folder under singles/
            for modality, names in plan.groups.items():
                ctx.singles[modality] = self.train_single(modality, names)
        task.before_fit(ctx)
        model, trainee = self.build()
        with self.mixed_precision():
            history = self.fit_stages(model, trainee)
        return self.finish(model, history)

    def build(self):
        """The task's model, its encoders copied from the single models under train.balance unimodal/probe,
        and what trains it (the model, or its gradient-modulation wrapper), compiled."""
        import keras

        from mbm_keras.training.balance import GradientModulation, copy_encoders

        ctx, plan = self.ctx, self.ctx.plan
        # Each model's initial weights depend on the seed alone, not on what
        # was built before it (a resumed run loads finished single models).
        keras.utils.set_random_seed(ctx.train_cfg["seed"])
        with self.mixed_precision(), ctx.strategy.scope():
            model = self.task.build(ctx)
            if plan.balance in ("unimodal", "probe"):  # a resumed stage's backup overrides these
                for modality, names in plan.groups.items():
                    copy_encoders(ctx.singles[modality], model, names)
            trainee = GradientModulation(model, plan.groups, plan.alpha) if plan.balance == "ogm_ge" else None
            self.compile_model(model, ctx.train_cfg["learning_rate"], ctx.train_cfg["epochs"], trainee)
        line = self.task.announce(ctx)
        if line:
            print(line, flush=True)
        return model, trainee or model

    def fit_stages(self, model, trainee):
        """The linear probe (train.balance probe), stage 1 and fine-tuning (train.fine_tune); the history."""
        from mbm_keras import unfreeze_backbone

        ctx, train_cfg, plan = self.ctx, self.ctx.train_cfg, self.ctx.plan
        resume_stage = _resume_stage(ctx.out)  # a killed run resumes at the epoch its backup reached
        learning_rate, history = train_cfg["learning_rate"], {}
        probe = plan.probe_epochs(train_cfg["epochs"])  # train.balance probe: the frozen-encoder stage first
        if probe and resume_stage not in ("stage1", "stage2"):
            with ctx.strategy.scope():
                frozen = _freeze_encoders(model, ctx.pre.features)
                self.compile_model(model, learning_rate, probe)
            print(f"Linear probe: {probe} epoch(s) with the single models' encoders frozen", flush=True)
            history = dict(self.fit(model, ctx.train_ds, epochs=probe, val=ctx.val_ds,
                                    callbacks=self.callbacks("probe", ctx.out, ctx.train_ds)).history)
            _restore_best(model, ctx.out)  # fine-tuning starts from the probe's best epoch
            with ctx.strategy.scope():
                for layer, trainable in frozen:
                    layer.trainable = trainable
        end = probe + plan.tune_epochs(train_cfg["epochs"])  # the epoch after the fusion's own stages
        if probe and end > probe:
            with ctx.strategy.scope():
                self.compile_model(model, learning_rate / 10, end - probe)
            print(f"Fine-tuning the whole fusion at learning rate {learning_rate / 10:g}: {end - probe} epoch(s)",
                  flush=True)
        if resume_stage != "stage2" and end > probe:  # stage 1 finished before the crash otherwise
            stage1 = self.fit(trainee, ctx.train_ds, epochs=end, initial_epoch=probe, val=ctx.val_ds,
                              callbacks=self.callbacks("stage1", ctx.out, ctx.train_ds, first_epoch=probe))
            _extend(history, stage1.history)
        fine_tune = train_cfg["fine_tune"]
        if fine_tune:
            with ctx.strategy.scope():
                unfreeze_backbone(model, fine_tune.get("num_layers"), recompile=False)
                self.compile_model(model, fine_tune.get("learning_rate", learning_rate / 10), fine_tune["epochs"],
                                   None if trainee is model else trainee)
            print(f"Fine-tuning: {fine_tune['epochs']} epoch(s), top {fine_tune.get('num_layers') or 'all'} "
                  f"backbone layers", flush=True)
            stage2 = self.fit(trainee, ctx.train_ds, epochs=end + fine_tune["epochs"], initial_epoch=end,
                              val=ctx.val_ds, callbacks=self.callbacks("stage2", ctx.out, ctx.train_ds, first_epoch=end))
            _extend(history, stage2.history)
        return history

    def finish(self, model, history):
        """The best epoch restored, the task's validation report, the run folder written."""
        ctx = self.ctx
        validated = ctx.val_ds is not None
        epoch = _kept_epoch(history, self.monitor, validated)
        if validated:
            _restore_best(model, ctx.out)  # model.keras: the best validation epoch
        summary = self.task.validate(ctx, model)
        summary["epoch"] = {**epoch, "model": "fusion"}
        summary["validation"] = ctx.held.summary
        kept = summary.get("kept_modality")
        if kept:
            model = self.save_kept_single(model, kept, summary)
        else:
            Run(ctx.out).save(model, ctx.pre, ctx.config)
        if ctx.chief:
            self.task.after_save(ctx, model, summary)
            write_json(os.path.join(ctx.out, SUMMARY), summary)
            print("\n".join(self.task.format_scores(summary)), flush=True)
        return {"output": ctx.out, "history": history, "model": model, "strategy": ctx.used, "summary": summary}

    def save_kept_single(self, model, kept, summary):
        """keep_best_of all, and a single model won: the run folder holds it, `fusion/` the fusion."""
        from mbm_keras.training.callbacks import read_history

        ctx, out = self.ctx, self.ctx.out
        rows = read_history(os.path.join(out, SINGLES, kept, "history.csv"), 0, 1 << 30)
        single_history = {k: [r.get(k) for r in rows] for k in (rows[0] if rows else {})}
        # the epoch of the model the run holds: the single model's own
        summary["epoch"] = {**_kept_epoch(single_history, self.monitor, ctx.val_ds is not None), "model": kept}
        Run(os.path.join(out, FUSION)).save(model, ctx.pre, ctx.config)
        if os.path.isfile(os.path.join(out, "best.keras")):
            os.replace(os.path.join(out, "best.keras"), os.path.join(out, FUSION, "best.keras"))
        single = ctx.singles[kept]
        Run(out).save(single, ctx.pre.subset(ctx.plan.groups[kept]), ctx.config)
        shutil.copyfile(os.path.join(out, SINGLES, kept, "model.keras"), os.path.join(out, "best.keras"))
        return single


def _extend(history, more):
    for k, v in more.items():
        history.setdefault(k, []).extend(v)


def _check_tpu_hosts(strategy, used, data):
    from mbm_keras.data.shards import is_shard_folder

    hosts = getattr(strategy.extended, "num_hosts", 1) if used == "tpu" else 1
    if hosts > 1 and any(is_shard_folder(data[k]) for k in ("train", "val") if data[k]):
        # One host feeds all its cores from one pipeline (as mirrored does); a pod's hosts would each need
        # their own shards handed to Keras' fit, which this package cannot test without a pod.
        raise ValueError(f"train.strategy 'tpu' on {hosts} hosts with a shard folder as data.train/data.val is not "
                         f"supported yet; train from the manifest, or use one TPU host, or strategy multi_worker")
