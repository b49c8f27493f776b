"""The run config's JSON Schema and its table of keys, both made from the one declaration in `config.py`.

`configs/run.schema.json` is what editors complete and check `run.yaml` with (the example configs start with
`# yaml-language-server: $schema=run.schema.json`, which the YAML language server of VS Code, Neovim and
others reads); `docs/config.md` lists every key. Regenerate both after changing a key, a task or a modality:

    python -m mbm_keras.training.config_schema

`tests/test_configs.py` fails when either is out of date.
"""

import json
import os

JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
SCHEMA_FILE = os.path.join("configs", "run.schema.json")
TABLE_FILE = os.path.join("docs", "config.md")


def _ranges():
    """`config.RANGES` with every task's own ranges (a key two tasks share has one range)."""
    from mbm_keras.tasks import get_task, list_tasks
    from mbm_keras.training.config import RANGES

    out = dict(RANGES)
    for kind in list_tasks():
        out.update({("task", k): v for k, v in get_task(kind).ranges.items()})
    return out


def _enums():
    """The values of every key with a fixed set: `config.choices()`, task kinds, fusions, each modality's encoders."""
    from mbm_keras.encoders import list_encoders
    from mbm_keras.fusions import list_fusions
    from mbm_keras.modalities import list_modalities
    from mbm_keras.tasks import list_tasks
    from mbm_keras.training.config import choices

    out = dict(choices())
    out[("task", "kind")] = tuple(list_tasks())
    out[("model", "fusion")] = tuple(list_fusions())
    out.update({("model", m): tuple(list_encoders(m)) for m in list_modalities()})
    return out


def _property(section, key, spec, ranges, enums):
    kind, default, doc = spec
    prop = {"description": doc, "type": [JSON_TYPES[kind], "null"] if default is None else JSON_TYPES[kind]}
    if default is not None and default != {}:
        prop["default"] = default
    if (section, key) in enums:
        values = list(enums[(section, key)])
        prop["enum"] = values + ([None] if default is None and None not in values else [])
    if (section, key) in ranges:
        low, high, low_in, high_in = ranges[(section, key)]
        if low is not None:
            prop["minimum" if low_in else "exclusiveMinimum"] = low
        if high is not None:
            prop["maximum" if high_in else "exclusiveMaximum"] = high
    return prop


def _preprocessing_properties():
    from mbm_keras.data.preprocessor import _options

    return {key: {"description": f"{expected} (default: {json.dumps(default)})"}
            for key, (default, _, expected) in _options().items()}


def json_schema():
    """The JSON Schema (draft 2020-12) of a run config: every section, key, type, default, range and choice.

    Examples:
        >>> json_schema()["properties"]["train"]["properties"]["epochs"]
        {'description': 'Training epochs ...', 'type': 'integer', 'default': 10, 'minimum': 1}
    """
    from mbm_keras.training.config import FINE_TUNE_KEYS, REQUIRED, schema

    ranges, enums = _ranges(), _enums()
    properties = {}
    for section, keys in schema().items():
        if not isinstance(keys, dict):
            properties[section] = _property(None, section, keys, ranges, enums)
            continue
        props = {key: _property(section, key, spec, ranges, enums) for key, spec in keys.items()}
        required = sorted(key for s, key in REQUIRED if s == section)
        properties[section] = {"type": "object", "additionalProperties": False, "properties": props,
                               **({"required": required} if required else {})}
    data, train = properties["data"]["properties"], properties["train"]["properties"]
    data["preprocessing"].update(additionalProperties=False, properties=_preprocessing_properties())
    train["fine_tune"].update(additionalProperties=False, required=["epochs"], properties={
        key: _property("train.fine_tune", key, (kind, None, f"fine-tuning stage: {key}"), ranges, enums)
        for key, kind in FINE_TUNE_KEYS.items()})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "mbm_keras run config",
            "description": "mbm-keras train --config run.yaml (docs/config.md lists every key).",
            "type": "object", "additionalProperties": False, "required": ["data"], "properties": properties}


def _cell(value):
    return "" if value is None else f"`{json.dumps(value)}`"


def config_table():
    """`docs/config.md`: a table per section of every key, its type, default, values and meaning."""
    from mbm_keras.data.preprocessor import _options
    from mbm_keras.training.config import schema

    ranges, enums = _ranges(), _enums()
    lines = ["# Run config keys", "",
             "Every key of `run.yaml`, made from the schema in `mbm_keras/training/config.py` (and each task's and",
             "modality's own keys) by `python -m mbm_keras.training.config_schema`, which also writes",
             "`configs/run.schema.json` for editors. Keys left out take their default.", ""]
    for section, keys in schema().items():
        keys = keys if isinstance(keys, dict) else {section: keys}
        lines += [f"## {section}", "", "| key | type | default | values | what it means |", "| --- | --- | --- | --- | --- |"]
        for key, (kind, default, doc) in keys.items():
            values = ", ".join(_cell(v) for v in enums.get((section, key), ()) if v is not None)
            if (section, key) in ranges:
                low, high, low_in, high_in = ranges[(section, key)]
                values = " and ".join(part for part in (
                    f"{'>=' if low_in else '>'} {low}" if low is not None else "",
                    f"{'<=' if high_in else '<'} {high}" if high is not None else "") if part)
            name = f"`{section}.{key}`" if section != key else f"`{key}`"
            lines.append(f"| {name} | {kind.__name__} | {_cell(default)} | {values} | {doc} |")
        lines.append("")
    lines += ["## data.preprocessing", "", "| key | default | expected |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | {_cell(default)} | {expected} |" for key, (default, _, expected) in _options().items()]
    return "\n".join(lines) + "\n"


def write(root="."):
    """Writes `configs/run.schema.json` and `docs/config.md` under `root`; returns their paths."""
    from mbm_keras.io import write_json

    schema_path, table_path = os.path.join(root, SCHEMA_FILE), os.path.join(root, TABLE_FILE)
    for path in (schema_path, table_path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(schema_path, json_schema())
    with open(table_path, "w", encoding="utf-8") as f:
        f.write(config_table())
    return schema_path, table_path


if __name__ == "__main__":
    for path in write():
        print(f"wrote {path}")
