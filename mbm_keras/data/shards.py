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

    Example:
        >>> pack("data/train.csv", "gs://bucket/train-shards", shard_mb=200)
        >>> train = make_dataset("gs://bucket/train-shards", preprocessor=pre, training=True)
    """
    import tensorflow as tf

    from mbm_keras.data.manifest import resolve_path

    if not (isinstance(shard_mb, (int, float)) and shard_mb > 0):
        raise ValueError(f"shard_mb must be a positive number. Received: shard_mb={shard_mb!r}")
    if shard_rows is not None and not (isinstance(shard_rows, int) and shard_rows > 0):
        raise ValueError(f"shard_rows must be a positive int. Received: shard_rows={shard_rows!r}")
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
        if writer is None:
            name = f"shard-{len(shards):05d}.tfrecord"
            writer = tf.io.TFRecordWriter(_join(out, f".{name}.tmp"))
            written, count = 0, 0
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        written += size
        count += 1
        if written >= limit or count == shard_rows:
            close()
        if bar is not None and (i % 256 == 255 or i == len(manifest) - 1):
            bar.update(i + 1)
    close()
    index = {"format": FORMAT, "source": manifest.path, "columns": manifest.columns, "file_columns": file_columns,
             "rows": len(manifest), "shards": shards}
    tmp = _join(out, f".{INDEX}.tmp")
    with gfile.GFile(tmp, "w") as f:
        json.dump(index, f, indent=1)
    gfile.rename(tmp, _join(out, INDEX), overwrite=True)  # last: the pack exists from here on
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


def shard_records(folder, index, seen, shuffle_seed=None, cycle_length=8, workers=None):
    """A `tf.data.Dataset` of `(record, shard, is_marker)`: shards in index
    order one after the other, or shuffled by `shuffle_seed` (a scalar tensor)
    and interleaved in parallel; with `workers=(i, n)`, only every n-th shard of
    that order from the i-th (each worker its own shards; else tf.data's FILE
    policy under a distribution strategy). Each shard's records are followed by a marker (an empty record)
    once the shard is read to its end; `seen[shard]` (a variable) then holds
    how many of its records were read whole, so a truncated shard is found."""
    import tensorflow as tf

    files = [_join(folder, s["file"]) for s in index["shards"]]
    present = tf.constant([_gfile().exists(f) for f in files], tf.bool)
    order = tf.range(len(files), dtype=tf.int64)
    if shuffle_seed is not None:  # stateless: Dataset.shuffle takes no tensor seed once a global seed is set
        order = tf.argsort(tf.random.stateless_uniform([len(files)], tf.stack([shuffle_seed, 17])))
    ds = tf.data.Dataset.from_tensor_slices((tf.gather(files, order), tf.cast(order, tf.int64)))
    if workers is not None:
        ds = ds.shard(workers[1], workers[0])

    def one_shard(path, k):
        def count(record):
            with tf.control_dependencies([seen.scatter_nd_add([[k]], [1])]):
                return tf.identity(record), k, False

        start = tf.data.Dataset.from_tensors(path).map(lambda p: (seen.scatter_nd_update([[k]], [0]), p)[1])
        # A missing shard is not opened (ignore_errors would retry opening it forever): its marker says it is short.
        start = start.filter(lambda p: tf.gather(present, k))
        records = start.flat_map(lambda p: tf.data.TFRecordDataset(p).ignore_errors()).map(count)
        return records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), k, True)))

    # Unshuffled, one shard after the other: the manifest's own order (the same batches as from the manifest).
    cycle = min(cycle_length, len(files)) if shuffle_seed is not None else 1
    ds = ds.interleave(one_shard, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.OFF if workers is not None else policy.FILE
    return ds.with_options(options)


def worker_steps(folder, index, workers, batch_size, on_error):
    """`(rows per worker batch, steps)` for `workers=(i, n)`: the global batch
    split n ways, and the steps every worker can take in any epoch (the fewest
    rows a worker can get: the n-th part of the shards, smallest first), so
    that no worker waits on the others forever."""
    if not (isinstance(workers, (tuple, list)) and len(workers) == 2 and all(isinstance(v, int) for v in workers)
            and 0 <= workers[0] < workers[1]):
        raise ValueError(f"workers must be (worker_index, num_workers) with 0 <= worker_index < num_workers. "
                         f"Received: workers={workers!r}")
    n = workers[1]
    if batch_size % n:
        raise ValueError(f"batch_size={batch_size} must divide evenly over {n} workers")
    if on_error != "raise" and n > 1:
        raise ValueError(f"{folder}: on_error={on_error!r} with {n} workers: a worker that skips a row would take "
                         f"fewer steps than the others and they would wait for it forever; run mbm-keras check-data "
                         f"on the manifest before packing it, and read the shards with on_error='raise'")
    rows = sorted(s["rows"] for s in index["shards"])
    steps = sum(rows[: len(rows) // n]) // (batch_size // n)
    if steps == 0:
        raise DataError(f"{folder}: {len(rows)} shard(s) of {rows[0]} to {rows[-1]} rows cannot give each of {n} "
                        f"workers a batch of {batch_size // n} rows; pack again with more, equal shards "
                        f"(--shard-rows {max(1, index['rows'] // (4 * n))})")
    return batch_size // n, steps


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


RING = 1 << 16  # rows of the records in flight, by position (far more than tf.data keeps in flight)


def make_shard_dataset(folder, pre, *, training, batch_size, seed, augment, missing_modalities, modality_dropout,
                       on_error, drop_remainder, shuffle, initial_epoch, shuffle_buffer=1024, workers=None,
                       verbose=True):
    """`make_dataset` for a shard folder: the same features, masks, labels,
    random draws per (seed, epoch, row) and batching, from records streamed
    out of the shards. A record that cannot be used (a file that does not
    decode, a label outside the vocabulary, an empty cell without
    `missing_modalities`) stops the pass naming the shard folder, row, column
    and reason, or is skipped and counted (`on_error="skip"`); a truncated
    shard stops the pass naming the shard, or keeps its intact records (skip).
    With `workers`, see `worker_steps`."""
    import tensorflow as tf

    from mbm_keras.data.asserts import check
    from mbm_keras.data.pipeline import Report, _attach_epoch, batch_examples, may_be_empty
    from mbm_keras.deploy.raw_inputs import explain

    folder = os.fspath(folder).rstrip("/")
    index = read_index(folder)
    check_shard_columns(folder, index, pre)
    if on_error == "raise":
        missing = [s for s in index["shards"] if not _gfile().exists(_join(folder, s["file"]))]
        if missing:
            raise DataError(f"{_join(folder, missing[0]['file'])}: missing (index.json lists it with "
                            f"{missing[0]['rows']} rows){f' and {len(missing) - 1} more shard(s)' if len(missing) > 1 else ''}; "
                            f"on_error='skip' reads the others")
    features = pre.features
    spec = parse_spec(index, pre)
    steps = None
    if workers is not None:
        batch_size, steps = worker_steps(folder, index, workers, batch_size, on_error)
        left = index["rows"] - steps * batch_size * workers[1]
        if verbose and workers[0] == 0:
            print(f"{folder}: each of {workers[1]} workers reads its own shards, {steps} steps of {batch_size} rows "
                  f"per epoch" + (f"; {left} of {index['rows']} rows are left out of each epoch"
                                  f"{' (other ones each epoch)' if shuffle else ''}: equal shards read them all "
                                  f"(mbm-keras pack --shard-rows)" if left else ""), file=sys.stderr)
    for feature in features.values():
        getattr(feature, "trackables", list)()
    label_of = pre.labels.tensor_encoder() if pre.labels is not None else None
    label_column = pre.columns["label"] if pre.labels is not None else None
    epoch = tf.Variable(initial_epoch - 1, dtype=tf.int64, trainable=False, name="epoch")
    ring = tf.Variable(tf.fill([RING], tf.constant(-1, tf.int64)), trainable=False, name="rows_in_flight")
    seen = tf.Variable(tf.zeros([len(index["shards"])], tf.int64), trainable=False, name="records_read")
    rows_per_shard = tf.constant([s["rows"] for s in index["shards"]], tf.int64)
    failed = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="failed")
    report = Report(rows=index["rows"], kept=index["rows"], skipped=0, errors=[])
    report.failed = None
    starts = np.cumsum([0] + [s["rows"] for s in index["shards"]])

    def diagnose(row, seen_count=None, decode=True):
        """Why record `row` failed. Without `decode` (inside the pipeline:
        plain Python, no TensorFlow op, which could wait forever for the
        threads the pipeline holds) it names the row and its shard; with it
        (from the main thread: `train()`, `dataset.report`), the shard is read
        again and each part decoded alone for the reason."""
        row = int(row)
        if row < 0:  # shard k's marker, -1 - k: the shard ended early
            k = -1 - row
            if k >= len(index["shards"]):
                return f"{folder}: a record could not be read"
            shard = index["shards"][k]
            count = int(seen[k].numpy()) if seen_count is None else int(seen_count)
            if decode and not _gfile().exists(_join(folder, shard["file"])):
                return f"{_join(folder, shard['file'])}: missing (index.json lists it with {shard['rows']} rows)"
            return (f"{_join(folder, shard['file'])}: truncated or damaged: {count} of its "
                    f"{shard['rows']} records could be read")
        k = int(np.searchsorted(starts, row, side="right") - 1)
        shard = _join(folder, index["shards"][k]["file"])
        where = f"{folder} row {row + 1} ({index['shards'][k]['file']})"
        if not decode:
            return (f"{where}: the record cannot be used (a file that does not decode, an empty cell or a label "
                    f"outside the vocabulary; its reason: dataset.report['errors'] or mbm-keras check-data)")
        try:
            record = next(iter(tf.data.TFRecordDataset(shard).skip(row - int(starts[k])).take(1)))
        except (StopIteration, tf.errors.OpError) as e:
            return f"{where}: the shard is truncated or damaged ({explain(e) if isinstance(e, tf.errors.OpError) else e})"
        parsed = tf.io.parse_single_example(record, spec)
        for name, feature in features.items():
            raw = _raw(parsed, feature)
            if not bool(feature.present(raw)):
                if not may_be_empty(missing_modalities, name):
                    return f"{where}, column {feature.columns()[0]!r}: empty {feature.name} cell (pass missing_modalities=True to treat it as absent)"
                continue
            try:
                feature.decode(raw)
            except tf.errors.OpError as e:
                return f"{where}, column {feature.columns()[0]!r}: cannot decode the {feature.name} cell or file: {explain(e)}"
        if label_of is not None:
            value, present = cell(parsed, label_column)
            if not bool(present) or not bool(label_of(value)[1]):
                shown = value.numpy().decode("utf-8", "replace")
                return f"{where}, column {label_column!r}: label {shown!r} is not usable (empty, not in the training vocabulary of {pre.labels.num_outputs} or not a number)"
        return f"{where}: cannot decode the record"

    hint = "on_error='skip' drops such rows" if on_error == "raise" else "skipped"
    failures = []

    def message(row, seen_count):
        row = int(row.numpy())
        failures.append(row)  # a row, or -1 - k: shard k ended early
        report.failed_at = row
        return f"make_dataset: {diagnose(row, seen_count.numpy(), decode=False)} ({hint})"

    def seen_of(row):
        return tf.gather(seen, tf.maximum(-1 - row, 0))

    report.failed_at = None
    report.explain_failure = lambda: (None if report.failed_at is None else
                                      f"make_dataset: {diagnose(report.failed_at)} ({hint})")

    def _raw(parsed, feature):
        if len(feature.columns()) == 1:
            return cell(parsed, feature.columns()[0])[0]
        return tf.stack([cell(parsed, c)[0] for c in feature.columns()])

    def one_epoch(e):
        seed_e = tf.cast(seed, tf.int64) * 1000003 + e
        records = shard_records(folder, index, seen, seed_e if shuffle else None, workers=workers)
        if shuffle:  # windows of records permuted by (seed, epoch, window): exact on resume
            def permute(w, window):
                n = tf.shape(window[1])[0]
                order = tf.argsort(tf.random.stateless_uniform([n], tf.stack([seed_e, w])))
                return tuple(tf.gather(t, order) for t in window)
            records = records.batch(shuffle_buffer).enumerate().map(permute).unbatch()
        # A sentinel after everything: a failure among the last records leaves a gap before it.
        end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(-1, tf.int64), True))
        return records.concatenate(end).enumerate().map(lambda p, r: (e, p, *r))

    def parse(e, p, record, shard, is_marker):
        def real():
            return tf.io.parse_single_example(record, spec)

        def empty():
            return tf.io.parse_single_example(tf.constant(_empty_record()), spec)

        parsed = tf.cond(is_marker, empty, real)
        # The marker of a shard says how many of its records were read whole.
        truncated = is_marker & (shard >= 0) & (tf.gather(seen, tf.maximum(shard, 0)) <
                                                 tf.gather(rows_per_shard, tf.maximum(shard, 0)))
        row = tf.where(is_marker, -1 - shard, parsed[ROW])  # -1 - k: shard k's marker
        with tf.control_dependencies([ring.scatter_nd_update([[p % RING]], [row])]):
            p = tf.identity(p)
        return e, p, parsed, is_marker, truncated, shard

    def decode(e, p, parsed, is_sentinel, truncated, shard):
        x, checks = {}, [check(~truncated, ["truncated shard"])]
        row = parsed[ROW]
        for name, feature in features.items():
            raw = _raw(parsed, feature)
            here = feature.present(raw) & ~is_sentinel
            if not may_be_empty(missing_modalities, name):
                checks.append(check(here | is_sentinel, ["empty cell"]))
            x[name] = tf.cond(here, lambda f=feature, r=raw: f.decode(r), feature.empty)
            x[f"{name}_mask"] = tf.reshape(tf.cast(here, tf.float32), [1])
        y = None
        if label_of is not None:
            value, present = cell(parsed, label_column)
            y, ok = label_of(value)
            checks.append(check(ok | is_sentinel, ["label"]))
        with tf.control_dependencies(checks):
            p = tf.identity(p)
        return e, p, row, is_sentinel, x, y

    def finish(e, p, row, is_sentinel, x, y):
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64) * 1000003 + e, row]), 4)
        out = {}
        feature_seeds = tf.random.experimental.stateless_split(seeds[0], len(features))
        for j, (name, feature) in enumerate(features.items()):
            out[name] = feature.finish(x[name], feature_seeds[j] if training else None, augment if training else None)
        masks = tf.stack([x[f"{name}_mask"][0] for name in features])
        if training and modality_dropout:
            drop = tf.random.stateless_uniform([len(features)], seeds[2]) < modality_dropout
            dropped = tf.where(drop, tf.zeros_like(masks), masks)
            masks = tf.cond(tf.reduce_sum(dropped) > 0, lambda: dropped, lambda: masks)
        if missing_modalities:
            for j, name in enumerate(features):
                out[f"{name}_mask"] = tf.reshape(masks[j], [1])
        return p, is_sentinel, out, y

    def gap(expected, element):
        p = element[0]
        missing = p > expected
        bad_row = ring[expected % RING]
        if on_error == "raise":
            reason = tf.cond(missing, lambda: tf.reshape(tf.py_function(message, [bad_row, seen_of(bad_row)], tf.string),
                                                         []),
                             lambda: tf.constant(""))
            with tf.control_dependencies([check(~missing, [reason])]):
                p = tf.identity(p)
        else:
            def say():
                rows = tf.map_fn(lambda q: ring[q % RING], tf.range(expected, p))
                notes = tf.map_fn(lambda r: tf.reshape(tf.py_function(message, [r, seen_of(r)], tf.string), []), rows,
                                  fn_output_signature=tf.string)
                lost = tf.reduce_sum(tf.map_fn(lambda r: tf.where(r < 0, tf.gather(rows_per_shard, tf.maximum(-1 - r, 0))
                                                                   - tf.gather(seen, tf.maximum(-1 - r, 0)),
                                                                   tf.constant(1, tf.int64)), rows))
                with tf.control_dependencies([failed.assign_add(lost)]):
                    if not verbose:  # the caller reports `dataset.report["errors"]` itself (check_data)
                        return tf.reduce_all(tf.strings.length(notes) >= 0)
                    return tf.print(tf.strings.reduce_join(notes, separator="\n"), output_stream=sys.stderr) or \
                        tf.constant(True)
            said = tf.cond(missing, say, lambda: tf.constant(False))
            with tf.control_dependencies([said]):
                p = tf.identity(p)
        return p + 1, (p, *element[1:])

    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = tf.data.Dataset.range(1).map(lambda _: epoch.assign_add(1)).flat_map(one_epoch)
    ds = ds.map(parse).map(decode, **parallel).map(finish, **parallel).ignore_errors()
    ds = ds.scan(tf.constant(0, tf.int64), gap).filter(lambda p, is_sentinel, x, y: ~is_sentinel)
    ds = ds.map(lambda p, is_sentinel, x, y: (x, y) if label_of is not None else x)
    if steps is not None:  # this worker's part: the same number of whole batches on every worker
        ds = batch_examples(ds, features, batch_size, True).take(steps)
        ds = _attach_epoch(ds.apply(tf.data.experimental.assert_cardinality(steps)), epoch)
        ds.per_worker, ds.workers = True, tuple(workers)  # one worker's batches: distributed_fit hands them to it
    else:
        if on_error == "raise":  # every record or an error: Keras counts the steps of an epoch
            ds = ds.apply(tf.data.experimental.assert_cardinality(index["rows"]))
        ds = _attach_epoch(batch_examples(ds, features, batch_size, drop_remainder), epoch)
    ds.report = _ShardReport(report, failed, lambda: [diagnose(row) for row in failures])
    ds.report.failed_rows = lambda: sorted(row for row in failures if row >= 0)  # manifest rows, 0-based
    ds.report.explain_failure = report.explain_failure
    return ds


class _ShardReport(dict):
    """`dataset.report` of a shard folder: rows skipped while streaming are counted as they are found."""

    def __init__(self, base, failed, streamed_errors):
        super().__init__(base)
        self._failed, self._streamed_errors = failed, streamed_errors

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if key == "errors":
            return value + self._streamed_errors()
        count = int(self._failed.numpy())
        return value + count if key == "skipped" else value - count if key == "kept" else value

    def get(self, key, default=None):
        return self[key] if key in self else default


def _empty_record():
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={ROW: tf.train.Feature(
        int64_list=tf.train.Int64List(value=[-1]))})).SerializeToString()
