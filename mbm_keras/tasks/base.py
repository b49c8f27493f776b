"""`Task`: one kind of model (`task.kind` in a run config), and everything that differs between kinds.

`train`, `evaluate`, `export_model`, `predict` and the CLI are drivers that
ask the run's task (KerasHub's `Task`, Ludwig's model types): its config keys
and checks, its data (inputs and targets of a `make_dataset` batch), its model,
loss and metrics, its validation report, its `evaluate` report, its exports and
what `predict` answers. A task is one file that subclasses `Task` and registers
it (`@register_task("name")`); the base class does what a single-output Keras
model needs, so a new task overrides only what it does differently.

    >>> @register_task("ordinal")
    ... class Ordinal(Task):
    ...     def build(self, ctx): ...
    ...     def loss_and_metrics(self, ctx): return "mse", ["mae"]
"""

import os

from mbm_keras.errors import ConfigError
from mbm_keras.registry import Registry

TASKS = Registry("task")
DEFAULT_TASK = "classification"  # a config without a task section, and a run folder without config.json


def register_task(name):
    """Class decorator: registers a `Task` subclass as `task.kind: name`.

    Examples:
        >>> @register_task("ordinal")
        ... class Ordinal(Task): ...
    """

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"register_task({name!r}) decorates a Task subclass. Received: {cls!r}")
        cls.name = name
        TASKS.register(name)(cls)
        return cls

    return decorator


def get_task(kind):
    """The `Task` registered as `kind` (an instance; tasks hold no state).

    Examples:
        >>> get_task("retrieval").options["embedding_dim"]
        (<class 'int'>, 128)
    """
    return TASKS.get(kind)()


def list_tasks():
    """The registered task kinds, sorted."""
    return TASKS.list()


def task_named(kind, where):
    """`get_task(kind)` for the task a file names; ValueError naming the file (`where`) when it is no registered
    task or no string."""
    if not isinstance(kind, str) or kind not in list_tasks():
        raise ValueError(f"{where}: task {kind!r} is not a registered task ({', '.join(list_tasks())}); was it "
                         f"written by a newer mbm_keras, or by a task defined in a module not imported here?")
    return get_task(kind)


def task_of(config=None, model=None, pre=None):
    """The task of a run: its config's `task.kind`, else the first task that
    recognizes the model or preprocessor (a run or export written without a
    config, e.g. `mbm-keras demo`'s), else classification.

    Examples:
        >>> task_of(Run("runs/search").config()).name
        'retrieval'
    """
    kind = ((config or {}).get("task") or {}).get("kind")
    if kind:
        return get_task(kind)
    for name in list_tasks():
        task = get_task(name)
        if task.recognizes(model, pre):
            return task
    return get_task(DEFAULT_TASK)


def model_features(model):
    """`{feature: {"modality", "encoder", "kwargs", "options"}}` a config's
    model section names: model.features, else one feature per modality key."""
    from mbm_keras.fusion_model import normalize_features
    from mbm_keras.modalities import list_modalities

    if model["features"] is not None:
        return normalize_features(model["features"])
    return {m: {"modality": m, "encoder": model[m], "kwargs": dict(model.get(f"{m}_kwargs") or {}), "options": {}}
            for m in list_modalities() if model.get(m) is not None}


def has_masks(model):
    """Whether a model takes `<feature>_mask` inputs (built with missing_modalities)."""
    return any(name.endswith("_mask") for name in (model.input if isinstance(model.input, dict)
                                                   else [t.name for t in model.inputs]))


def default_out(run_dir, manifest):
    """`<run_dir>/eval-<manifest name>.json`: where `evaluate` writes by default."""
    name = os.path.splitext(os.path.basename(os.fspath(manifest)))[0]
    return os.path.join(run_dir, f"eval-{name}.json")


class TrainingContext:
    """What `train()` has made when it asks the task: the config's sections,
    the fitted preprocessor, the plan of models, the strategy, the datasets and
    `train_single` (trains one comparison model in its own run folder under
    `singles/`). Tasks read it and may set `common`, `singles`, `plan.groups`
    and their own attributes."""

    def __init__(self, **fields):
        self.singles = {}
        self.__dict__.update(fields)


class Task:
    """The base of every task: a single-output Keras model of the config's
    features, trained with the task's loss on `make_dataset`'s `(inputs,
    labels)` batches, evaluated with its metrics, exported with raw-input
    signatures. Subclasses override what differs; see `register_task`."""

    name = None
    # task.<key>: (type, default): the config keys this task reads.
    options = {}
    # task.<key>: what it means (docs/config.md, the JSON Schema's descriptions).
    docs = {}
    # task.<key>: (low, high, low inclusive?, high inclusive?), as config.RANGES.
    ranges = {}
    # train.balance and train.keep_best_of apply (a classifier's modalities); other tasks train one model.
    balances = False
    # Whether `predict` answers for this task's runs.
    predicts = True
    # The task endpoints `mbm-keras serve` offers beside TensorFlow Serving's REST API (`mbm_keras/serve/endpoints.py`).
    endpoints = ("predict",)
    # model.fusion_kwargs are checked as arguments of model.fusion.
    checks_fusion_kwargs = True

    # ---- config ----
    def check_config(self, config, source):
        """Checks (and may fill) the config's sections for this task, after the generic checks.
        Raises ConfigError naming the key."""
        if config["train"]["balance"] not in ("auto", "none") and not self.balances:
            raise ConfigError(f"{source}: train.balance {config['train']['balance']!r} balances a classifier's "
                              f"modalities; a {self.name} model trains as one (balance: none)")

    # ---- data ----
    def preprocessing(self, data):
        """`fit_preprocessor` options from the data section."""
        return data["preprocessing"]

    def columns(self, data):
        """The data section's columns this task reads."""
        return data["columns"]

    def holdout_label(self, data):
        """The column the validation hold-out is stratified by (None: not stratified)."""
        return data["columns"].get("label")

    def prepare(self, ctx):
        """Called once the preprocessor is fitted, before the datasets are made (may change `ctx.common`)."""

    def batches(self, ctx, dataset):
        """`make_dataset` batches -> what the model trains on (default: as they are)."""
        return dataset

    # ---- model ----
    def build(self, ctx):
        """The model (uncompiled), inside the strategy's scope."""
        raise NotImplementedError(f"task {self.name!r} does not build a model")

    def loss_and_metrics(self, ctx):
        """`(loss, metrics)` for `compile`."""
        raise NotImplementedError(f"task {self.name!r} has no loss")

    def before_fit(self, ctx):
        """Trains what the model is compared with or built from, before it (default: nothing)."""

    def announce(self, ctx):
        """The line printed before the model trains, or None."""
        return None

    def validate(self, ctx, model):
        """`summary.json`'s scores of the trained model on `ctx.val_ds`
        (may keep a comparison model instead: set `summary["kept_modality"]`,
        `ctx.singles` and `ctx.plan.groups`)."""
        if ctx.val_ds is None:
            return {"task": self.name, "why": "no data.val"}
        scores = model.evaluate(ctx.val_ds, verbose=0, return_dict=True)
        return {"task": self.name, "val": {k: float(v) for k, v in scores.items()}}

    def tuning_score(self, summary):
        """`(metric, value, "max" or "min")`: the validation score `mbm-keras tune` ranks a trial's run by (its
        `summary.json`); ValueError saying why when the run has none."""
        if "val" not in summary or "loss" not in summary["val"]:
            raise ValueError(f"the run has no validation score ({summary.get('why', 'not measured')})")
        return "loss", summary["val"]["loss"], "min"

    def after_save(self, ctx, model, summary):
        """Writes what the run folder holds besides the model (the chief only)."""

    def format_scores(self, summary):
        """The lines `train` prints at the end."""
        if "val" not in summary:
            return [f"{self.name}: {summary.get('why', 'not measured')}"]
        return ["Validation: " + ", ".join(f"{k} {v:.4f}" for k, v in summary["val"].items())]

    # ---- a trained run ----
    def recognizes(self, model, pre):
        """Whether a model and preprocessor written without a config are this task's."""
        return False

    def check_loadable(self, folder):
        """Raises when the run's model is not one to evaluate, export or predict with."""

    def evaluate(self, run_dir, model, pre, manifest, out, batch_size=32, on_error="raise",
                 allow_outside_root=False, **options):
        """`evaluate`'s results (without writing them): the loss and metrics of `model.evaluate`.
        `out` is where the driver writes the JSON (files beside it share its name)."""
        from mbm_keras.data import make_dataset

        unknown = {k: v for k, v in options.items() if v not in (None, False)}
        if unknown:
            raise ValueError(f"{', '.join(unknown)} do(es) not apply to a {self.name} run")
        ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size, missing_modalities=has_masks(model),
                          on_error=on_error, allow_outside_root=allow_outside_root)
        results = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
        return {"task": self.name, **results, "examples": ds.report["kept"], "skipped": ds.report["skipped"]}

    def report_lines(self, results):
        """`mbm-keras evaluate`'s lines beyond the examples and the float metrics."""
        return []

    def example_inputs(self, model, pre, manifest, count, allow_outside_root=False):
        """Up to `count` preprocessed examples of `manifest` as `{input: array}` (export checks)."""
        from mbm_keras.data import make_dataset

        ds = make_dataset(manifest, preprocessor=pre, batch_size=count, missing_modalities=has_masks(model),
                          verbose=False, allow_outside_root=allow_outside_root)
        batch = next(iter(ds))
        x = batch[0] if isinstance(batch, tuple) else batch
        return {k: v.numpy() for k, v in x.items()}

    def export(self, model, pre, format, folder, quantize, examples, say):
        """Writes the export into `folder`; returns `(model file, check or None)`.
        Default: one model with raw-input signatures (SavedModel) or preprocessed
        inputs (TFLite, ONNX), checked against Keras on `examples`."""
        from mbm_keras.deploy.formats import export_single_model

        return export_single_model(model, pre, format, folder, quantize, examples, say)

    def serving_functions(self, model, pre):
        """`{signature: (function of raw inputs -> named outputs, its input signature, its preprocessor)}`: the
        raw-input signatures the SavedModel export holds, and what `mbm-keras serve` runs on a run folder (one
        implementation of both). Default: `serving_default`, raw inputs -> probabilities and classes."""
        from mbm_keras.deploy.saved_model import serving_functions

        return serving_functions(model, pre)

    def check_servable(self, path):
        """Raises when `mbm-keras serve` has nothing to offer for this task's model."""
        if not self.endpoints:
            raise ValueError(f"{path} is a {self.name} model; mbm-keras serve serves classifiers, regressors, "
                             f"retrieval and transcription models")

    def report_check(self, check, format, quantize, say):
        """Prints the export check's figures; raises when a float export disagrees with Keras."""
        from mbm_keras.deploy.formats import report_parity

        report_parity(check, format, quantize, say)

    def answer(self, outputs, classes, top, path):
        """What `predict` returns for one example's outputs (an array, or a
        SavedModel signature's output dict): the `top` classes and their
        probabilities, or `[("prediction", values)]` without classes."""
        import numpy as np

        if isinstance(outputs, dict):
            if "classes" in outputs:
                names = outputs["classes"].numpy()  # one row per example; a vector in earlier exports
                classes = [c.decode("utf-8") for c in (names[0] if names.ndim == 2 else names)]
            outputs = outputs.get("probabilities", outputs.get("predictions")).numpy()[0]
        outputs = np.asarray(outputs)
        if classes is None:
            return [("prediction", outputs.tolist())]
        order = np.argsort(-outputs)[:top]
        return [(classes[i], float(outputs[i])) for i in order]

    def check_predictable(self, path, artifact):
        """Raises when `predict` has no answer for this task's model in `artifact`
        ("keras", "saved_model", "tflite", "onnx")."""
        if not self.predicts:
            raise ValueError(f"{path} is a {self.name} model; predict answers with classes or values")
