"""Sharded storage: a manifest packed into TFRecord shards, read as a manifest is.

`pack()` (`mbm-keras pack`) writes each row's cells into `tf.train.Example`
records: the bytes of the files a file column names, as they are on disk (no
re-encoding), and every other cell as UTF-8 text; shards of about `shard_mb`
megabytes, and `index.json` (columns, file columns, shards and their row
counts) written last. A killed pack leaves only hidden `.tmp` files and no
index, which readers refuse.

`make_dataset(folder, ...)` (and `data.train: folder` in run.yaml) reads the
shards with parallel interleaving; under `multi_worker` and TPU strategies
tf.data shards them by file, so each worker reads its own shards. All file
access goes through `tf.io.gfile`: `gs://`, `s3://` (with TensorFlow's file
system plugins) and `ram://` folders work as local ones do.
"""

import json
import os
import re
import sys

import numpy as np

from mbm_keras.data.manifest import DataError, read_manifest

INDEX = "index.json"
FORMAT = "mbm_keras-shards-1"
ROW = "__row__"  # the manifest row of a record (0-based)
SOURCE = "__source__/"  # + file column: the path the manifest named


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_remote(path):
    """`gs://...`, `s3://...`, `ram://...`: a path for TensorFlow's file systems."""
    return isinstance(path, str) and "://" in path


def is_shard_folder(path):
    """True when `path` is a folder written by `pack` (it holds index.json).
    A remote path that is not a manifest file counts as one: reading its
    index then passes on the file system's own error (credentials, network)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = os.fspath(path)
    if is_remote(path):
        from mbm_keras.data.manifest import SUPPORTED_SUFFIXES

        return not path.lower().endswith(SUPPORTED_SUFFIXES)
    return os.path.isdir(path) and os.path.isfile(_join(path, INDEX))


def _join(folder, name):
    return folder.rstrip("/") + "/" + name


def read_index(folder):
    """The index of a shard folder; a DataError naming the folder otherwise."""
    import tensorflow as tf

    folder = os.fspath(folder)
    gfile = _gfile()
    path = _join(folder, INDEX)
    try:
        found = gfile.exists(path)
    except tf.errors.OpError as e:  # a remote file system's own reason (credentials, network), with the path
        raise DataError(f"{path}: {' '.join(e.message.split())}") from None
    if not found:
        hidden = [n for n in gfile.listdir(folder) if n.endswith(".tmp")] if gfile.isdir(folder) else []
        more = " (it holds unfinished .tmp shards: a pack was interrupted; run mbm-keras pack again)" if hidden else ""
        raise DataError(f"{folder}: not a shard folder (no {INDEX}){more}")
    try:
        with gfile.GFile(path, "r") as f:
            index = json.load(f)
    except tf.errors.OpError as e:
        raise DataError(f"{path}: {' '.join(e.message.split())}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise DataError(f"{path}: not an mbm_keras shard index (format {found!r}, expected {FORMAT!r})")
    _check_index(path, index)
    return index


SHARD_NAME = re.compile(r"shard-\d{5,}\.tfrecord")


def _check_index(path, index):
    """index.json's fields, and shard names that stay inside the folder (`pack` writes shard-00000.tfrecord, ...):
    a crafted index naming ../../etc/passwd or an absolute path is refused before anything is opened."""
    columns, files, shards = index.get("columns"), index.get("file_columns"), index.get("shards")
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns) and isinstance(files, list)
            and set(files) <= set(columns) and isinstance(shards, list) and isinstance(index.get("rows"), int)):
        raise DataError(f"{path}: a damaged shard index (columns, file_columns, rows and shards are expected as "
                        f"pack writes them); pack the manifest again")
    for k, shard in enumerate(shards):
        name = shard.get("file") if isinstance(shard, dict) else None
        if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
            raise DataError(f"{path}: shard {k + 1} is named {name!r}; a shard index names only the folder's own "
                            f"shard-NNNNN.tfrecord files (a path that leaves the folder is refused)")
        if not (isinstance(shard.get("rows"), int) and shard["rows"] >= 0):
            raise DataError(f"{path}: shard {name} announces {shard.get('rows')!r} rows")
    if sum(s["rows"] for s in shards) != index["rows"]:
        raise DataError(f"{path}: its shards announce {sum(s['rows'] for s in shards)} rows in all, the index "
                        f"{index['rows']}; pack the manifest again")


def _remove_leftovers(out, gfile, progress):
    """Shards and temporaries a killed `pack` left in `out` (only names pack writes), so a new pack is clean."""
    names = [n.rstrip("/") for n in gfile.listdir(out)]
    stale = [n for n in names if SHARD_NAME.fullmatch(n) or (n.startswith(".") and n.endswith(".tmp") and (
        SHARD_NAME.fullmatch(n[1:-4]) or n == f".{INDEX}.tmp"))]
    for name in stale:
        gfile.remove(_join(out, name))
    if stale and progress:
        print(f"Removed {len(stale)} file(s) an interrupted pack left in {out}", file=sys.stderr)


def _file_columns(manifest):
    """The columns whose every non-empty cell names an existing file (as `write_manifest` finds them)."""
    found = []
    for column in manifest.columns:
        cells = [c for c in manifest.column(column) if c is not None]
        if cells and all(isinstance(c, str) for c in cells) and all(
                _gfile().exists(os.path.join(manifest.root, c)) for c in cells[:5]):
            found.append(column)
    return found


def _check_shard_sizes(shard_mb, shard_rows):
    if not (isinstance(shard_mb, (int, float)) and shard_mb > 0):
        raise ValueError(f"shard_mb must be a positive number. Received: shard_mb={shard_mb!r}")
    if shard_rows is not None and not (isinstance(shard_rows, int) and shard_rows > 0):
        raise ValueError(f"shard_rows must be a positive int. Received: shard_rows={shard_rows!r}")


def _publish_index(out, index, gfile):
    """Writes `index.json` through a temporary file: a reader sees the whole pack or none."""
    tmp = _join(out, f".{INDEX}.tmp")
    with gfile.GFile(tmp, "w") as f:
        json.dump(index, f, indent=1)
    gfile.rename(tmp, _join(out, INDEX), overwrite=True)


def _example(manifest, columns, i, file_columns, allow_outside_root, gfile):
    """Row `i` as a serialized `tf.train.Example` (a file column's file bytes, as on disk, and the path it
    named; every other cell as UTF-8 text), and the bytes it carries."""
    import tensorflow as tf

    from mbm_keras.data.manifest import resolve_path

    feature = {ROW: tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
    size = 0
    for column, cells in columns.items():
        cell = cells[i]
        value = []
        if cell is not None and column in file_columns:
            path = resolve_path(manifest, i, column, cell, allow_outside_root)
            if not gfile.exists(path):
                raise DataError(f"{manifest.where(i)}, column {column!r} ({path}): file not found")
            with gfile.GFile(path, "rb") as f:
                value = [f.read()]
            feature[SOURCE + column] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(cell).encode()]))
        elif cell is not None:
            value = [str(cell).encode("utf-8")]
        size += sum(len(v) for v in value)
        feature[column] = tf.train.Feature(bytes_list=tf.train.BytesList(value=value))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(), size


def pack(manifest, out, shard_mb=200, file_columns=None, progress=True, allow_outside_root=False, shard_rows=None):
    """Packs a manifest and its files into TFRecord shards.

    Args:
        manifest: CSV / JSON Lines / Parquet path, or a `Manifest`.
        out: the shard folder (local, `gs://...`, `ram://...`); created.
        shard_mb: the size a shard is closed at, in MB (of file bytes and cells).
        shard_rows: also close a shard at this many rows. Equal shards let
            `multi_worker` training read every row: each worker reads whole
            shards and all take the same number of steps.
        file_columns: the columns holding file paths; default: each column
            whose first non-empty cells name existing files.
        progress: a progress bar.
        allow_outside_root: accept paths outside the manifest's folder.

    Returns:
        the index (dict): `columns`, `file_columns`, `rows`, `shards`
        (`[{"file", "rows", "bytes"}]`).

    Raises:
        DataError: a file a row names is missing or outside the manifest's
            folder (named with row, column and file); nothing is published.

    Examples:
        >>> pack("data/train.csv", "gs://bucket/train-shards", shard_mb=200)
        >>> train = make_dataset("gs://bucket/train-shards", preprocessor=pre, training=True)
    """
    import tensorflow as tf

    _check_shard_sizes(shard_mb, shard_rows)
    manifest = read_manifest(manifest)
    file_columns = _file_columns(manifest) if file_columns is None else list(file_columns)
    manifest.check_columns(file_columns)
    gfile = _gfile()
    out = os.fspath(out)
    gfile.makedirs(out)
    if gfile.exists(_join(out, INDEX)):
        raise FileExistsError(f"{out} already holds a pack ({INDEX}); remove it or choose another --out")
    _remove_leftovers(out, gfile, progress)
    columns = {c: manifest.column(c) for c in manifest.columns}
    limit = shard_mb * 1e6
    shards, writer, written, count, name = [], None, 0, 0, None
    bar = None
    if progress:
        import keras

        print(f"Packing {len(manifest):,} rows of {manifest.path} into {out}", file=sys.stderr)
        bar = keras.utils.Progbar(len(manifest), unit_name="row")

    def close():
        nonlocal writer
        if writer is not None:
            writer.close()
            final = _join(out, name)
            gfile.rename(_join(out, f".{name}.tmp"), final, overwrite=True)
            shards.append({"file": name, "rows": count, "bytes": written})
            writer = None

    for i in range(len(manifest)):
        example, size = _example(manifest, columns, i, file_columns, allow_outside_root, gfile)
        if writer is None:
            name = f"shard-{len(shards):05d}.tfrecord"
            writer = tf.io.TFRecordWriter(_join(out, f".{name}.tmp"))
            written, count = 0, 0
        writer.write(example)
        written += size
        count += 1
        if written >= limit or count == shard_rows:
            close()
        if bar is not None and (i % 256 == 255 or i == len(manifest) - 1):
            bar.update(i + 1)
    close()
    index = {"format": FORMAT, "source": manifest.path, "columns": manifest.columns, "file_columns": file_columns,
             "rows": len(manifest), "shards": shards}
    _publish_index(out, index, gfile)  # last: the pack exists from here on
    if progress:
        print(f"Wrote {len(shards)} shard(s) and {INDEX} to {out}", file=sys.stderr)
    return index


def shard_manifest(folder):
    """The cells of a shard folder as a `Manifest` (for fitting the
    preprocessing on it): file columns hold the paths the packed manifest
    named, other columns their text; file bytes are not kept."""
    import tensorflow as tf

    from mbm_keras.data.manifest import Manifest

    folder = os.fspath(folder).rstrip("/")
    index = read_index(folder)
    spec = {ROW: tf.io.FixedLenFeature([], tf.int64)}
    for column in index["columns"]:
        spec[SOURCE + column if column in index["file_columns"] else column] = tf.io.VarLenFeature(tf.string)
    files = [_join(folder, s["file"]) for s in index["shards"]]
    def cells(record):
        parsed = tf.io.parse_single_example(record, spec)
        return parsed[ROW], {c: cell(parsed, SOURCE + c if c in index["file_columns"] else c)
                             for c in index["columns"]}

    ds = tf.data.TFRecordDataset(files).map(cells, num_parallel_calls=tf.data.AUTOTUNE)
    data = {c: np.empty(index["rows"], dtype=object) for c in index["columns"]}
    for rows, parsed in ds.batch(4096).as_numpy_iterator():
        for column, (values, present) in parsed.items():
            column_values = np.full(len(rows), None, dtype=object)
            column_values[present] = [v.decode("utf-8") for v in values[present]]
            data[column][rows] = column_values
    return Manifest(_join(folder, INDEX), columns=index["columns"], data=data)


def check_shard_columns(folder, index, pre):
    """DataError when the shards lack a column the preprocessor reads, or hold
    as a cell a column it reads as a file (or the reverse)."""
    from mbm_keras.data.preprocessor import column_names

    needed = column_names(pre.columns, pre.feature_modalities)
    missing = [c for c in needed if c not in index["columns"]]
    if missing:
        raise DataError(f"{folder}: the shards have no column {missing[0]!r} (the preprocessor reads "
                        f"{', '.join(needed)}; the shards hold {', '.join(index['columns'])})")
    for feature in pre.features.values():
        for column in feature.columns():
            packed_as_file = column in index["file_columns"]
            if feature.file_based != packed_as_file:
                how = "file bytes" if packed_as_file else "text cells"
                raise DataError(f"{folder}: column {column!r} is packed as {how}, but the preprocessor reads it as a "
                                f"{feature.name} {'file' if feature.file_based else 'cell'}; pack again with "
                                f"--file-columns naming the file columns")


def parse_spec(index, pre):
    """The `tf.io.parse_single_example` features the preprocessor reads."""
    import tensorflow as tf

    spec = {ROW: tf.io.FixedLenFeature([], tf.int64)}
    for feature in pre.features.values():
        for column in feature.columns():
            spec[column] = tf.io.VarLenFeature(tf.string)
    if pre.labels is not None:
        spec[pre.columns["label"]] = tf.io.VarLenFeature(tf.string)
    return spec


def cell(parsed, column):
    """A parsed column as `(value, present)`: "" and False for an empty cell."""
    import tensorflow as tf

    dense = tf.sparse.to_dense(parsed[column], default_value="")
    present = tf.size(dense) > 0
    return tf.cond(present, lambda: dense[0], lambda: tf.constant("")), present
