"""Run configuration: YAML or JSON, validated with errors that name the key and value."""

import inspect
import json
import math
import os

from mbm_keras.errors import ConfigError  # noqa: F401  (raised here; public as mbm_keras.training.ConfigError)

# The one declaration of the config: section -> key -> (type, default, what it means). Validation
# (load_config), the JSON Schema editors complete run.yaml with (configs/run.schema.json) and the table of
# every key (docs/config.md) come from it, with RANGES and choices() below, the registered modalities'
# model keys and preprocessing options, and each task's own keys (mbm_keras/tasks/*.py: Task.options).
SCHEMA = {
    "data": {
        "train": (str, None, "The training manifest (CSV, JSON Lines, Parquet) or a shard folder (mbm-keras pack); "
                             "relative to the config file."),
        "val": (str, None, "The validation manifest: picks the epoch, stops early, chooses fusion or a single model."),
        "val_split": (float, 0.2, "Without data.val: the share of data.train's rows held out for validation "
                                  "(stratified by label, grouped by data.group); 0: no validation."),
        "group": (str, None, "A column whose values never sit on both sides of the hold-out (a speaker, a patient, "
                             "a product)."),
        "columns": (dict, None, "Feature -> manifest column (image, text, audio, tabular: {numeric, categorical}, "
                                "timeseries, or named features), and label."),
        "preprocessing": (dict, {}, "Preprocessing options (image_size, text_length, sample_rate, ...): see the "
                                    "data.preprocessing table."),
        "batch_size": (int, 32, "Examples per batch (the global batch under a distribution strategy)."),
        "shuffle": (bool, True, "false: the training rows in their order every epoch (time-ordered data, or "
                                "comparing runs exactly)."),
        "augment": (bool, False, "Image flip, crop and colour jitter in training."),
        "missing_modalities": (bool, False, "An empty cell is an absent modality: the model takes `<feature>_mask` "
                                            "inputs and a learned 'absent' embedding."),
        "modality_dropout": (float, None, "In training, the probability of hiding each modality of an example "
                                          "(None: 0.5 under train.balance unimodal, else 0)."),
        "cache": (str, None, "'memory' or a file path prefix: decoded examples cached after the first epoch."),
        "on_error": (str, "raise", "raise: the first unusable row stops training, naming row, column and file; "
                                   "skip: such rows are dropped and counted."),
        "verify": (str, "none", "When files are checked: as they are read (none), every header first (header), "
                                "or every file decoded first (decode)."),
        "allow_outside_root": (bool, False, "Accept file paths outside the manifest's folder."),
    },
    "model": {
        # Then one encoder key per registered modality ("image", "text", ...), see _modality_keys.
        "features": (dict, None, "Named features, several per modality: {front: [image, small_cnn], title: "
                                 "[text, gru]}."),
        "share_encoders": (dict, None, "{feature: other feature}: one encoder (one set of weights) for both."),
        "fusion": (str, "concat", "The fusion of the features (mbm-keras zoo lists them)."),
        "dropout": (float, 0.0, "Dropout on each encoder's features."),
        "weights": (str, None, "The image encoders' weights: imagenet (the Keras cache) or a weights file."),
        "freeze_backbone": (bool, False, "Freeze pretrained backbones (stage one of fine-tuning)."),
        "fusion_kwargs": (dict, None, "Arguments of the fusion layer, e.g. {units: 256}."),
    },
    "train": {
        "epochs": (int, 10, "Training epochs (of the fusion, and of each single model)."),
        "learning_rate": (float, 1e-3, "The optimizer's learning rate."),
        "optimizer": (str, "adam", "The optimizer."),
        "lr_schedule": (str, "constant", "The learning-rate schedule after warm-up."),
        "warmup_epochs": (int, 0, "Epochs of linear warm-up."),
        "weight_decay": (float, None, "Decoupled weight decay (adamw)."),
        "seed": (int, 0, "The seed of the weights, the data order and every random draw (a run is repeatable)."),
        "early_stopping_patience": (int, None, "Epochs without progress before stopping (None: 5 when there is "
                                               "validation data, else off)."),
        "monitor": (str, None, "The metric that picks the epoch (None: val_loss with validation data, else loss)."),
        "strategy": (str, "auto", "The tf.distribute strategy."),
        "mixed_precision": (str, None, "A Keras mixed-precision policy."),
        "jit_compile": (bool, False, "XLA-compile the training step (static batch shapes)."),
        "steps_per_execution": (int, 1, "Batches per compiled call."),
        "fine_tune": (dict, None, "A second stage that unfreezes backbones: {epochs, num_layers, learning_rate}."),
        "balance": (str, "auto", "Balanced multimodal training (auto: probe for several modalities, none for one)."),
        "keep_best_of": (str, "auto", "Which models the run may keep (auto: all when there is validation data and "
                                      "several modalities, else fusion)."),
        "ogm_alpha": (float, 0.5, "The strength of on-the-fly gradient modulation (balance: ogm_ge)."),
    },
    # task.kind, then each registered task's own keys (mbm_keras/tasks/*.py: Task.options), see _task_keys.
    "task": {"kind": (str, "classification", "The kind of model (mbm_keras/tasks/).")},
    "output": (str, "runs/latest", "The run folder; relative to the config file."),
    "search": (dict, None, "Choices and ranges of config keys for mbm-keras tune, e.g. {model.fusion: [concat, gated], "
                           "train.learning_rate: {min: 1.0e-4, max: 1.0e-2, log: true}}; mbm-keras train ignores it."),
}
REQUIRED = {("data", "train"), ("data", "columns")}


def _modality_keys():
    """model.<modality> (an encoder name) and model.<modality>_kwargs for every registered modality."""
    from mbm_keras.modalities import list_modalities

    keys = {}
    for m in list_modalities():
        keys[m] = (str, None, f"The {m} encoder (mbm-keras zoo lists them); a feature named {m}.")
        keys[f"{m}_kwargs"] = (dict, None, f"Arguments of the {m} encoders, e.g. {{units: 128}} or {{weights: "
                                           f"encoders/{m}.weights.h5}}.")
    return keys


def _task_keys():
    """task.<key> of every registered task: `{key: (type, default, doc)}` (a key two tasks share must agree);
    the doc names the task."""
    from mbm_keras.tasks.base import TASKS, get_task

    keys = {}
    for kind in TASKS.in_order():
        task = get_task(kind)
        for key, spec in task.options.items():
            declared = (spec[0], spec[1], f"task.kind {kind}: {task.docs.get(key, spec[2] if len(spec) > 2 else '')}")
            if keys.setdefault(key, declared)[:2] != declared[:2]:
                raise ValueError(f"task.{key} is declared twice with different types or defaults (task {kind!r})")
    return keys


def schema():
    """The config schema: sections -> {key: (type, default, doc)}, with the registered modalities' model keys
    and the registered tasks' task keys."""
    out = dict(SCHEMA)
    out["model"] = {**_modality_keys(), **SCHEMA["model"]}
    out["task"] = {**SCHEMA["task"], **_task_keys()}
    return out

# The valid range of every numeric key: (low, high, low inclusive?, high inclusive?);
# None is unbounded. Floats must also be finite (YAML's .nan and .inf are refused).
RANGES = {
    ("data", "batch_size"): (1, None, True, None),
    ("data", "modality_dropout"): (0, 1, True, False),
    ("data", "val_split"): (0, 1, True, False),
    ("model", "dropout"): (0, 1, True, False),
    ("train", "epochs"): (1, None, True, None),
    ("train", "learning_rate"): (0, None, False, None),
    ("train", "warmup_epochs"): (0, None, True, None),
    ("train", "weight_decay"): (0, None, True, None),
    ("train", "seed"): (0, 2**31 - 1, True, True),
    ("train", "early_stopping_patience"): (1, None, True, None),
    ("train", "steps_per_execution"): (1, None, True, None),
    ("train", "ogm_alpha"): (0, None, False, None),
    ("train.fine_tune", "epochs"): (1, None, True, None),
    ("train.fine_tune", "num_layers"): (1, None, True, None),
    ("train.fine_tune", "learning_rate"): (0, None, False, None),
}


def _describe_range(low, high, low_in, high_in):
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_in else '>'} {low}")
    if high is not None:
        parts.append(f"{'<=' if high_in else '<'} {high}")
    return " and ".join(parts)


def _check_range(section, key, value, source, ranges=None):
    spec = (ranges or RANGES).get((section, key))
    if value is None or spec is None:
        return
    name = f"{section}.{key}"
    low, high, low_in, high_in = spec
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {name} must be a finite number. Received: {name}={value!r}")
    too_low = low is not None and (value < low if low_in else value <= low)
    too_high = high is not None and (value > high if high_in else value >= high)
    if too_low or too_high:
        raise ConfigError(f"{source}: {name} must be {_describe_range(*spec)}. Received: {name}={value!r}")


def _check(section, key, value, expected, source):
    name = f"{section}.{key}" if section else key
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{source}: {name} must be a {expected.__name__}. Received: {name}={value!r}")


FINE_TUNE_KEYS = {"epochs": int, "num_layers": int, "learning_rate": float}


from mbm_keras.tasks.base import model_features  # noqa: E402,F401  (public here since the first release)


def choices():
    """`{(section, key): the values it may take}` of every key with a fixed set of values."""
    from mbm_keras.training.optimizer import OPTIMIZERS, SCHEDULES
    from mbm_keras.training.balance import BALANCES, KEEP
    from mbm_keras.training.strategy import STRATEGIES

    return {
        ("data", "on_error"): ("raise", "skip"),
        ("data", "verify"): ("decode", "header", "none"),
        ("train", "balance"): BALANCES,
        ("train", "keep_best_of"): KEEP,
        ("train", "strategy"): STRATEGIES,
        ("train", "mixed_precision"): (None, "mixed_bfloat16", "mixed_float16"),
        ("train", "optimizer"): tuple(OPTIMIZERS),
        ("train", "lr_schedule"): SCHEDULES,
    }


def _check_choices(out, source):
    valid_values = choices()
    for (section, key), valid in valid_values.items():
        if section == "train" and out[section][key] not in valid:
            raise ConfigError(f"{source}: {section}.{key} must be one of {valid}. Received: "
                              f"{section}.{key}={out[section][key]!r}")
    train = out["train"]
    fine_tune = train["fine_tune"]
    if fine_tune is not None:
        unknown = set(fine_tune) - set(FINE_TUNE_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {sorted(f'train.fine_tune.{k}' for k in unknown)}. "
                              f"Valid keys: {', '.join(FINE_TUNE_KEYS)}")
        if "epochs" not in fine_tune:
            raise ConfigError(f"{source}: train.fine_tune.epochs is required")
        for key, expected in FINE_TUNE_KEYS.items():
            if key in fine_tune:
                _check("train.fine_tune", key, fine_tune[key], expected, source)
                _check_range("train.fine_tune", key, fine_tune[key], source)
    data = out["data"]
    for key in ("on_error", "verify"):
        valid = valid_values[("data", key)]
        if data[key] not in valid:
            raise ConfigError(f"{source}: data.{key} must be one of {valid}. Received: data.{key}={data[key]!r}")
    _check_preprocessing(data["preprocessing"], source)
    from mbm_keras.tasks import get_task, list_tasks

    # A task whose model has no fusion (transcription: its context's cross-attention) checks the kwargs itself.
    kind = out["task"]["kind"]
    _check_model(out["model"], source, fusion_kwargs=kind not in list_tasks() or get_task(kind).checks_fusion_kwargs)
    _check_task(out, source)


def _check_task(out, source):
    """task.kind is registered; no key of another task is set; the task checks the rest."""
    from mbm_keras.tasks import get_task, list_tasks

    task = out["task"]
    if task["kind"] not in list_tasks():
        raise ConfigError(f"{source}: task.kind must be one of {tuple(list_tasks())}. Received: "
                          f"task.kind={task['kind']!r}")
    mine = get_task(task["kind"])
    for kind in list_tasks():
        for key, (_, default, *_) in get_task(kind).options.items():
            if key not in mine.options and task.get(key) is not None and task[key] != default:
                raise ConfigError(f"{source}: task.{key} is for task.kind: {kind}")
    ranges = {("task", k): v for k, v in mine.ranges.items()}
    for key in mine.options:
        _check_range("task", key, task[key], source, ranges)
    mine.check_config(out, source)


def _check_model(model, source, fusion_kwargs=True):
    """model.features and model.share_encoders are well formed; model.fusion exists
    and model.fusion_kwargs are arguments of that fusion, naming the bad key."""
    from mbm_keras.fusion_model import normalize_features
    from mbm_keras.fusions import FUSIONS, list_fusions

    if model["features"] is not None:
        try:
            normalize_features(model["features"])
        except ValueError as e:
            raise ConfigError(f"{source}: model.{e}") from None
    if model["fusion"] not in list_fusions():
        raise ConfigError(f"{source}: model.fusion must be one of {list_fusions()}. Received: "
                          f"model.fusion={model['fusion']!r}")
    cls = FUSIONS.get(model["fusion"])
    valid = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass.__module__.startswith("mbm_keras"):
            valid |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
    for key in (model["fusion_kwargs"] or {}) if fusion_kwargs else ():
        if key not in valid:
            raise ConfigError(f"{source}: model.fusion_kwargs.{key} is not an argument of fusion "
                              f"{model['fusion']!r}. Valid: {', '.join(sorted(valid))}")


def _check_preprocessing(options, source):
    """data.preprocessing: known keys (the Preprocessor's options), each checked
    the way the Preprocessor checks it, reported as a config error."""
    from mbm_keras.data.preprocessor import Preprocessor, option_names

    valid = option_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {[f'data.preprocessing.{k}' for k in unknown]}. "
                          f"Valid keys in data.preprocessing: {', '.join(valid)}")
    try:
        Preprocessor.check_options(**options)
    except ValueError as e:
        raise ConfigError(f"{source}: data.preprocessing.{e}") from None


def load_config(config):
    """Reads (path) or checks (dict) a run config and fills in defaults.

    Unknown keys and wrongly typed values raise `ConfigError` naming them.

    Args:
        config: a YAML or JSON file path, or a dict with the same sections
            (`data`, `model`, `train`, `output`).

    Returns:
        The checked config as a dict, defaults filled in.

    Examples:
        >>> config = load_config("run.yaml")
        >>> config["train"]["epochs"]
    """
    source, base_dir = "config", os.getcwd()
    if not isinstance(config, dict):
        config, source = _read(config)
        base_dir = os.path.dirname(source)
    out = _with_defaults(config, source)
    _check_choices(out, source)
    _resolve_paths(out, base_dir)
    return out


def _read(path):
    """`(the mapping in a YAML or JSON file, its absolute path)`; ConfigError naming the file otherwise."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with data, model, train, output")
    return config, path


def _with_defaults(config, source):
    """Every section and key of the schema: the given value, checked for its type and range, or the default."""
    out = {}
    full = schema()
    unknown = set(config) - set(full)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)}. Valid top-level keys: {', '.join(full)}")
    for section, spec in full.items():
        if not isinstance(spec, dict):
            value = config.get(section, spec[1])
            if value is not None or spec[1] is not None:
                _check(None, section, value, spec[0], source)
            out[section] = value
            continue
        given = config.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: {section} must be a mapping. Received: {section}={given!r}")
        unknown = set(given) - set(spec)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {sorted(f'{section}.{k}' for k in unknown)}. "
                f"Valid keys in {section}: {', '.join(spec)}"
            )
        out[section] = {}
        for key, (expected, default, *_) in spec.items():
            if (section, key) in REQUIRED and given.get(key) is None:
                raise ConfigError(f"{source}: {section}.{key} is required")
            value = given.get(key, default)
            if value is not None:
                _check(section, key, value, expected, source)
                _check_range(section, key, value, source)
            out[section][key] = value
    return out


def _resolve_paths(out, base_dir):
    """Paths in a config file are relative to the file; gs://, s3:// and ram:// paths are kept as they are."""
    for key in ("train", "val"):
        if out["data"][key] is not None:
            out["data"][key] = _resolve(base_dir, out["data"][key])
    out["output"] = _resolve(base_dir, out["output"])
    # A KerasHub preset given as a folder is relative to the file too; a preset name stays a name.
    preprocessing = out["data"].get("preprocessing") or {}
    if _is_folder(preprocessing.get("text_preset")):
        out["data"]["preprocessing"] = {**preprocessing, "text_preset": _resolve(base_dir, preprocessing["text_preset"])}
    for key, kwargs in out["model"].items():
        if not (key.endswith("_kwargs") and isinstance(kwargs, dict)):
            continue
        if _is_folder(kwargs.get("preset")):
            kwargs = out["model"][key] = {**kwargs, "preset": _resolve(base_dir, kwargs["preset"])}
        if isinstance(kwargs.get("weights"), str) and kwargs["weights"] != "imagenet":  # a weights file (pretrain's)
            out["model"][key] = {**kwargs, "weights": _resolve(base_dir, kwargs["weights"])}


def _is_folder(preset):
    return isinstance(preset, str) and (os.sep in preset or "/" in preset or preset.startswith((".", "~")))


def _resolve(base_dir, path):
    from mbm_keras.data.shards import is_remote

    return path if is_remote(path) else os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))
