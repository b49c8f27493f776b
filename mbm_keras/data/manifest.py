"""Reading manifests (CSV, JSON Lines, Parquet) and resolving the paths in them."""

import csv
import json
import os

from mbm_keras.codecs.paths import resolve_path  # noqa: F401  (public here since the first release)
from mbm_keras.errors import DataError

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


class Manifest:
    """The rows of a manifest file, with the folder its relative paths resolve against.

    `read_manifest(path)` returns one; build one in memory to hand rows to
    `make_dataset` without writing a file (paths resolve against `path`'s folder).
    The cells are stored by column (`column(name)`, a numpy object array with
    None for empty cells), so a million-row manifest costs one array per column;
    `rows` (a list of dicts) is made on first use.

    Examples:
        >>> m = Manifest("/data/all.csv", [{"image": "a.png", "label": "cat"}], ["image", "label"])
        >>> train = m.subset([0])
        >>> m.column("label")
        array(['cat'], dtype=object)

    Attributes:
        path: absolute path of the manifest file.
        root: the folder of the manifest; relative paths resolve against it.
        rows: list of dicts, column -> value; empty cells are None.
        columns: the column names.
    """

    def __init__(self, path, rows=None, columns=None, *, data=None, table=None, numbers=None):
        self.path = path
        self.numbers = numbers  # a subset's row numbers in the file (0-based), for `where`; None: 0, 1, ...
        self.root = os.path.dirname(path)
        self.columns = list(columns if columns is not None else (data or table.column_names))
        self._rows = rows
        self._data = data if data is not None else ({} if table is not None else None)
        self._table = table  # a pyarrow Table of strings: columns become arrays when asked for
        if rows is None and data is None and table is None:
            raise ValueError("Manifest needs rows (a list of dicts) or data (column -> array)")

    @property
    def rows(self):
        if self._rows is None:
            names = self.columns
            self._rows = [dict(zip(names, cells)) for cells in zip(*(self.column(c) for c in names))]
            self._data = self._table = None  # from now on the rows are the cells (a caller may edit them)
        return self._rows

    def column(self, name):
        """The cells of column `name`: a numpy object array, None for an empty cell."""
        import numpy as np

        if self._rows is not None:  # the rows, which a caller may have edited, are the cells
            array = np.empty(len(self), dtype=object)
            array[:] = [row.get(name) for row in self._rows]
            return array
        if name not in self._data:
            self._data[name] = _cells(self._table.column(name))
        return self._data[name]

    def __len__(self):
        if self._rows is not None:
            return len(self._rows)
        if self._table is not None:
            return self._table.num_rows
        return len(next(iter(self._data.values()))) if self._data else 0

    def where(self, row):
        """`manifest.csv row 3` — how errors name a row (1-based, header excluded)."""
        return f"{self.path} row {(row if self.numbers is None else int(self.numbers[row])) + 1}"

    def check_columns(self, names):
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise DataError(
                f"{self.path}: no column {missing[0]!r} (asked for in columns=). "
                f"The manifest's columns are: {', '.join(self.columns)}"
            )

    def subset(self, indices):
        """The rows at `indices`; errors still name each row by its number in the file."""
        import numpy as np

        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        numbers = indices if self.numbers is None else np.asarray(self.numbers)[indices]
        if self._rows is not None:
            return Manifest(self.path, [self._rows[i] for i in indices], self.columns, numbers=numbers)
        if self._table is not None:
            return Manifest(self.path, columns=self.columns, table=self._table.take(indices), numbers=numbers)
        return Manifest(self.path, columns=self.columns, data={c: self._data[c][indices] for c in self.columns},
                        numbers=numbers)


def _cells(strings):
    """A pyarrow string column -> numpy object array, None for empty or blank cells."""
    import pyarrow.compute as pc

    empty = pc.equal(pc.utf8_trim_whitespace(strings), "").to_numpy(zero_copy_only=False)
    array = strings.to_numpy(zero_copy_only=False).astype(object)
    array[empty] = None
    return array


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
        path: the manifest file (`.csv`, `.jsonl`/`.ndjson`, `.parquet`), a
            shard folder written by `pack` (its cells; file columns hold the
            paths packed), or a `Manifest` (returned as is).

    Examples:
        >>> m = read_manifest("data/train.csv")
        >>> m.rows[0]["image"], m.root
    """
    if isinstance(path, Manifest):
        return path
    from mbm_keras.data.shards import is_shard_folder, shard_manifest

    if is_shard_folder(path):
        return shard_manifest(path)
    if isinstance(path, str) and "://" in path:
        raise DataError(f"{path}: manifests are read from local files; for shared storage pack the manifest "
                        f"into shards (mbm-keras pack --data manifest.csv --out {path.rsplit('/', 1)[0]}/shards) "
                        f"and pass the shard folder")
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Manifest not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".csv":
        manifest = _read_csv_columns(path)
        if manifest is not None:
            return manifest
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


def _read_csv_columns(path):
    """A well-formed UTF-8 CSV read by column with pyarrow's parallel reader
    (a million rows in about a second); None for anything else (no pyarrow,
    ragged rows, bad bytes, duplicate names), which the csv module then reads
    and names the problem of."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            header = next(csv.reader(f), None)
        except (UnicodeDecodeError, csv.Error):
            return None
    if not header or len(set(header)) != len(header) or "" in header:
        return None
    try:
        table = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowException, OSError):
        return None
    if table.column_names != header:
        return None
    if table.num_rows == 0:
        raise DataError(f"Manifest {path} has no rows")
    return Manifest(path, columns=header, table=table.combine_chunks())


def _read_rows(path, suffix):
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            try:
                columns = list(reader.fieldnames or [])
                rows = []
                for i, row in enumerate(reader):
                    if None in row:
                        raise DataError(f"{path} row {i + 1}: more cells than the header's {len(columns)} columns")
                    rows.append(row)
            except csv.Error as e:  # e.g. a cell over the csv module's field limit: a file that is not a manifest
                raise DataError(f"{path} line {reader.line_num + 1}: not a CSV manifest ({e}; a manifest's cells are "
                                f"file paths, texts, numbers and labels)") from None
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


