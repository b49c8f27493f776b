"""Reading manifests (CSV, JSON Lines, Parquet) and resolving the paths in them."""

import csv
import json
import os


class DataError(ValueError):
    """A manifest row that cannot be used; the message names file, row, column and value.

    Example:
        >>> try:
        ...     make_dataset("train.csv", preprocessor=pre)
        ... except DataError as e:
        ...     print(e)   # train.csv row 7, column 'image' (cat.jpg): file not found ...
    """


SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


class Manifest:
    """The rows of a manifest file, with the folder its relative paths resolve against.

    `read_manifest(path)` returns one; build one in memory to hand rows to
    `make_dataset` without writing a file (paths resolve against `path`'s folder).

    Example:
        >>> m = Manifest("/data/all.csv", [{"image": "a.png", "label": "cat"}], ["image", "label"])
        >>> train = m.subset([0])

    Attributes:
        path: absolute path of the manifest file.
        root: the folder of the manifest; relative paths resolve against it.
        rows: list of dicts, column -> value; empty cells are None.
        columns: the column names.
    """

    def __init__(self, path, rows, columns):
        self.path = path
        self.root = os.path.dirname(path)
        self.rows = rows
        self.columns = columns

    def __len__(self):
        return len(self.rows)

    def where(self, row):
        """`manifest.csv row 3` — how errors name a row (1-based, header excluded)."""
        return f"{self.path} row {row + 1}"

    def check_columns(self, names):
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise DataError(
                f"{self.path}: no column {missing[0]!r} (asked for in columns=). "
                f"The manifest's columns are: {', '.join(self.columns)}"
            )

    def subset(self, indices):
        return Manifest(self.path, [self.rows[i] for i in indices], self.columns)


def _clean(value):
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, float) and value != value:  # NaN in Parquet
        return None
    return value


def read_manifest(path):
    """Reads a CSV, JSON Lines or Parquet manifest into a `Manifest`.

    Args:
        path: the manifest file (`.csv`, `.jsonl`/`.ndjson`, `.parquet`), or
            a `Manifest` (returned as is).

    Example:
        >>> m = read_manifest("data/train.csv")
        >>> m.rows[0]["image"], m.root
    """
    if isinstance(path, Manifest):
        return path
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Manifest not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        columns, rows = _read_rows(path, suffix)
    except UnicodeDecodeError as e:
        with open(path, "rb") as f:
            line = f.read(e.start).count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} on line {line}); save the manifest as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {os.path.basename(path)} > utf8-{os.path.basename(path)}"
        ) from None
    rows = [{c: _clean(row.get(c)) for c in columns} for row in rows]
    if not rows:
        raise DataError(f"Manifest {path} has no rows")
    return Manifest(path, rows, columns)


def _read_rows(path, suffix):
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = []
            for i, row in enumerate(reader):
                if None in row:
                    raise DataError(f"{path} row {i + 1}: more cells than the header's {len(columns)} columns")
                rows.append(row)
    elif suffix in (".jsonl", ".ndjson"):
        rows, columns = [], []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {i + 1}: not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {i + 1}: expected a JSON object, got {type(row).__name__}")
                columns.extend(k for k in row if k not in columns)
                rows.append(row)
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(
                f"Reading {path} needs pyarrow: pip install 'mbm_keras[parquet]' (or pip install pyarrow)"
            ) from None
        table = pq.read_table(path)
        columns, rows = list(table.column_names), table.to_pylist()
    else:
        raise DataError(f"Unsupported manifest type {suffix!r} for {path}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return columns, rows


def resolve_path(manifest, row, column, value, allow_outside_root=False):
    """The absolute path of a file named in a manifest cell.

    Relative paths resolve against the manifest's folder. A path that resolves
    outside that folder (`../..`, an absolute path elsewhere, a symlink out) is
    refused unless `allow_outside_root=True`.
    """
    value = os.fspath(value)
    path = os.path.realpath(os.path.join(manifest.root, value))
    root = os.path.realpath(manifest.root)
    if not allow_outside_root and os.path.commonpath([path, root]) != root:
        reason = (f"path resolves to {path}, outside the data root {root}. To allow it: allow_outside_root=True (Python), "
                  f"data.allow_outside_root: true (run config), or --allow-outside-root (mbm-keras evaluate/export).")
        error = DataError(f"{manifest.where(row)}, column {column!r} ({value}): {reason}")
        error.reason = reason
        raise error
    return path
