"""The `search:` section of a run config: the choices and ranges `mbm-keras tune` explores.

    search:
      model.fusion: [concat, gated, transformer]             # choices
      model.dropout: {min: 0.0, max: 0.5}                    # a range (floats)
      model.fusion_kwargs.units: [32, 64, 128]               # a key inside a mapping-valued key
      train.learning_rate: {min: 1.0e-4, max: 1.0e-2, log: true}
      train.epochs: {min: 4, max: 16, step: 4}               # ints: both ends ints

Each key is a config key (`section.key`, then keys inside a mapping); each choice, and each range's ends, is
checked by the run config's own schema (`load_config`), so a bad entry is one line naming the key before any
trial runs.
"""

import copy
import math

from mbm_keras.errors import ConfigError

_RANGE_KEYS = {"min", "max", "log", "step"}


class SearchSpace:
    """The parsed `search:` section.

    Attributes:
        entries: `{key: list of choices | {"min", "max", "log", "step"}}` in the config's order.
    """

    def __init__(self, entries):
        self.entries = entries

    def size(self):
        """The number of distinct settings (`math.inf` with a continuous range)."""
        total = 1
        for spec in self.entries.values():
            if isinstance(spec, list):
                total *= len(spec)
            elif spec["step"] is None and not (isinstance(spec["min"], int) and isinstance(spec["max"], int)):
                return math.inf
            else:
                step = spec["step"] or 1
                total *= int((spec["max"] - spec["min"]) // step) + 1
        return total

    def hyperparameters(self):
        """The space as KerasTuner `HyperParameters` (choices of mixed types by their position)."""
        import keras_tuner

        hp = keras_tuner.HyperParameters()
        for key, spec in self.entries.items():
            if isinstance(spec, list):
                hp.Choice(key, _choice_values(spec))
            elif isinstance(spec["min"], int) and isinstance(spec["max"], int) and not isinstance(spec["min"], bool):
                hp.Int(key, spec["min"], spec["max"], step=spec["step"] or 1, sampling="log" if spec["log"] else "linear")
            else:
                hp.Float(key, float(spec["min"]), float(spec["max"]), step=spec["step"],
                         sampling="log" if spec["log"] else "linear")
        return hp

    def values(self, hp_values):
        """`{key: config value}` of a trial's hyperparameter values."""
        out = {}
        for key, spec in self.entries.items():
            value = hp_values[key]
            if isinstance(spec, list) and not _uniform(spec):
                value = spec[int(value)]
            out[key] = value
        return out


def _uniform(choices):
    kinds = {type(c) for c in choices}
    return len(kinds) == 1 and kinds <= {str, int, float, bool}


def _choice_values(choices):
    return list(choices) if _uniform(choices) else list(range(len(choices)))


def parse_search(config, source="config"):
    """The `search:` section of a raw run config (a dict), checked: `SearchSpace`.

    Raises `ConfigError` naming the key (`search.model.fusion`) for a key the config does not have, a choice or
    range end the config's schema refuses, or a malformed entry.

    Examples:
        >>> space = parse_search(yaml.safe_load(open("configs/tune.yaml")))
        >>> space.size()
    """
    from mbm_keras.training.config import load_config, schema

    search = config.get("search")
    if not isinstance(search, dict) or not search:
        raise ConfigError(f"{source}: search must be a mapping of config keys to choices or ranges, e.g. "
                          f"search: {{model.fusion: [concat, gated]}}. Received: search={search!r}")
    sections = schema()
    base = {k: v for k, v in config.items() if k != "search"}
    entries = {}
    for key, spec in search.items():
        name = f"{source}: search.{key}"
        parts = str(key).split(".")
        if len(parts) < 2 or parts[0] not in sections or not isinstance(sections[parts[0]], dict) \
                or parts[1] not in sections[parts[0]]:
            valid = [s for s, v in sections.items() if isinstance(v, dict) and s != "search"]
            raise ConfigError(f"{name}: not a config key; a key is section.key (sections: {', '.join(valid)}), "
                              f"e.g. model.fusion or train.learning_rate")
        spec = _entry(name, spec)
        for value in (spec if isinstance(spec, list) else [spec["min"], spec["max"]]):
            try:
                load_config(with_value(base, key, value))
            except ConfigError as e:
                reason = str(e).split(": ", 1)[-1] if str(e).startswith("config: ") else str(e)
                raise ConfigError(f"{name}: {value!r} is not a valid value: {reason}") from None
        entries[key] = spec
    return SearchSpace(entries)


def _entry(name, spec):
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{name}: the list of choices is empty")
        if len({repr(c) for c in spec}) != len(spec):
            raise ConfigError(f"{name}: the choices repeat a value: {spec!r}")
        return spec
    if isinstance(spec, dict):
        unknown = set(spec) - _RANGE_KEYS
        if unknown or not {"min", "max"} <= set(spec):
            raise ConfigError(f"{name}: a range is {{min: ..., max: ...}} with optional log: true and step. "
                              f"Received: {spec!r}")
        low, high = spec["min"], spec["max"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise ConfigError(f"{name}: a range needs numbers min < max. Received: min={low!r}, max={high!r}")
        log, step = bool(spec.get("log", False)), spec.get("step")
        if log and low <= 0:
            raise ConfigError(f"{name}: a log range needs min > 0. Received: min={low!r}")
        if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0):
            raise ConfigError(f"{name}: step must be a positive number. Received: step={step!r}")
        return {"min": low, "max": high, "log": log, "step": step}
    raise ConfigError(f"{name}: must be a list of choices or a range {{min: ..., max: ...}}. Received: {spec!r}")


def with_value(config, key, value):
    """A copy of the raw config with `key` (`section.key[.inner...]`) set to `value`."""
    out = copy.deepcopy(config)
    parts = key.split(".")
    node = out.setdefault(parts[0], {})
    for part in parts[1:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"config: search.{key}: {'.'.join(parts[:-1])} is not a mapping")
        node = node[part]
    node[parts[-1]] = value
    return out
