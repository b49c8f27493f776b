"""Reading a shard folder (`pack`'s TFRecord shards) as `make_dataset` batches: parallel
interleaving, each worker its own shards, and every missing, truncated or unusable record named
by its manifest row (see `shards.py` for the format)."""

import os
import sys

import numpy as np

from mbm_keras.data.manifest import DataError
from mbm_keras.data.shards import ROW, _gfile, _join, cell, check_shard_columns, parse_spec, read_index


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

    from mbm_keras.data.pipeline import _attach_epoch, batch_examples

    stream = _ShardStream(folder, pre, on_error, missing_modalities, initial_epoch)
    steps = None
    if workers is not None:
        batch_size, steps = worker_steps(stream.folder, stream.index, workers, batch_size, on_error)
        if verbose and workers[0] == 0:
            stream.say_worker_split(workers, steps, batch_size, shuffle)
    ds = stream.examples(seed, shuffle, shuffle_buffer, workers, training, augment, modality_dropout, verbose)
    if steps is not None:  # this worker's part: the same number of whole batches on every worker
        ds = batch_examples(ds, pre.features, batch_size, True).take(steps)
        ds = _attach_epoch(ds.apply(tf.data.experimental.assert_cardinality(steps)), stream.epoch)
        ds.per_worker, ds.workers = True, tuple(workers)  # one worker's batches: distributed_fit hands them to it
    else:
        if on_error == "raise":  # every record or an error: Keras counts the steps of an epoch
            ds = ds.apply(tf.data.experimental.assert_cardinality(stream.index["rows"]))
        ds = _attach_epoch(batch_examples(ds, pre.features, batch_size, drop_remainder), stream.epoch)
    ds.report = _ShardReport(stream.report, stream.failed, lambda: [stream.diagnose(row) for row in stream.failures])
    ds.report.failed_rows = lambda: sorted(row for row in stream.failures if row >= 0)  # manifest rows, 0-based
    ds.report.explain_failure = stream.report.explain_failure
    return ds


class _ShardStream:
    """The records of a shard folder as examples: parsed, decoded, finished by (seed, epoch, row), every
    record that fails found by the gap it leaves in the positions (`gap`) and named (`diagnose`)."""

    def __init__(self, folder, pre, on_error, missing_modalities, initial_epoch):
        import tensorflow as tf

        from mbm_keras.data.pipeline import Report

        self.folder = folder = os.fspath(folder).rstrip("/")
        self.index = index = read_index(folder)
        check_shard_columns(folder, index, pre)
        if on_error == "raise":
            missing = [s for s in index["shards"] if not _gfile().exists(_join(folder, s["file"]))]
            if missing:
                more = f" and {len(missing) - 1} more shard(s)" if len(missing) > 1 else ""
                raise DataError(f"{_join(folder, missing[0]['file'])}: missing (index.json lists it with "
                                f"{missing[0]['rows']} rows){more}; on_error='skip' reads the others")
        self.pre, self.features, self.on_error = pre, pre.features, on_error
        self.missing_modalities = missing_modalities
        self.spec = parse_spec(index, pre)
        for feature in self.features.values():
            getattr(feature, "trackables", list)()
        self.label_of = pre.labels.tensor_encoder() if pre.labels is not None else None
        self.label_column = pre.columns["label"] if pre.labels is not None else None
        self.epoch = tf.Variable(initial_epoch - 1, dtype=tf.int64, trainable=False, name="epoch")
        self.ring = tf.Variable(tf.fill([RING], tf.constant(-1, tf.int64)), trainable=False, name="rows_in_flight")
        self.seen = tf.Variable(tf.zeros([len(index["shards"])], tf.int64), trainable=False, name="records_read")
        self.rows_per_shard = tf.constant([s["rows"] for s in index["shards"]], tf.int64)
        self.failed = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="failed")
        self.report = Report(rows=index["rows"], kept=index["rows"], skipped=0, errors=[])
        self.report.failed, self.report.failed_at = None, None
        self.starts = np.cumsum([0] + [s["rows"] for s in index["shards"]])
        self.hint = "on_error='skip' drops such rows" if on_error == "raise" else "skipped"
        self.failures = []
        self.report.explain_failure = lambda: (None if self.report.failed_at is None else
                                               f"make_dataset: {self.diagnose(self.report.failed_at)} ({self.hint})")

    def say_worker_split(self, workers, steps, batch_size, shuffle):
        index = self.index
        left = index["rows"] - steps * batch_size * workers[1]
        print(f"{self.folder}: each of {workers[1]} workers reads its own shards, {steps} steps of {batch_size} "
              f"rows per epoch" + (f"; {left} of {index['rows']} rows are left out of each epoch"
                                   f"{' (other ones each epoch)' if shuffle else ''}: equal shards read them all "
                                   f"(mbm-keras pack --shard-rows)" if left else ""), file=sys.stderr)

    # ---- naming a failed record ----
    def diagnose(self, row, seen_count=None, decode=True):
        """Why record `row` failed. Without `decode` (inside the pipeline:
        plain Python, no TensorFlow op, which could wait forever for the
        threads the pipeline holds) it names the row and its shard; with it
        (from the main thread: `train()`, `dataset.report`), the shard is read
        again and each part decoded alone for the reason."""
        row = int(row)
        if row < 0:  # shard k's marker, -1 - k: the shard ended early
            return self._diagnose_shard(-1 - row, seen_count, decode)
        k = int(np.searchsorted(self.starts, row, side="right") - 1)
        where = f"{self.folder} row {row + 1} ({self.index['shards'][k]['file']})"
        if not decode:
            return (f"{where}: the record cannot be used (a file that does not decode, an empty cell or a label "
                    f"outside the vocabulary; its reason: dataset.report['errors'] or mbm-keras check-data)")
        return self._diagnose_record(row, k, where)

    def _diagnose_shard(self, k, seen_count, decode):
        if k >= len(self.index["shards"]):
            return f"{self.folder}: a record could not be read"
        shard = self.index["shards"][k]
        count = int(self.seen[k].numpy()) if seen_count is None else int(seen_count)
        path = _join(self.folder, shard["file"])
        if decode and not _gfile().exists(path):
            return f"{path}: missing (index.json lists it with {shard['rows']} rows)"
        return f"{path}: truncated or damaged: {count} of its {shard['rows']} records could be read"

    def _diagnose_record(self, row, k, where):
        import tensorflow as tf

        from mbm_keras.codecs.asserts import explain
        from mbm_keras.data.pipeline import may_be_empty

        try:
            shard = _join(self.folder, self.index["shards"][k]["file"])
            record = next(iter(tf.data.TFRecordDataset(shard).skip(row - int(self.starts[k])).take(1)))
        except (StopIteration, tf.errors.OpError) as e:
            return f"{where}: the shard is truncated or damaged ({explain(e) if isinstance(e, tf.errors.OpError) else e})"
        parsed = tf.io.parse_single_example(record, self.spec)
        for name, feature in self.features.items():
            raw = self.raw(parsed, feature)
            column = feature.columns()[0]
            if not bool(feature.present(raw)):
                if not may_be_empty(self.missing_modalities, name):
                    return (f"{where}, column {column!r}: empty {feature.name} cell (pass missing_modalities=True "
                            f"to treat it as absent)")
                continue
            try:
                feature.decode(raw)
            except tf.errors.OpError as e:
                return f"{where}, column {column!r}: cannot decode the {feature.name} cell or file: {explain(e)}"
        if self.label_of is not None:
            value, present = cell(parsed, self.label_column)
            if not bool(present) or not bool(self.label_of(value)[1]):
                shown = value.numpy().decode("utf-8", "replace")
                return (f"{where}, column {self.label_column!r}: label {shown!r} is not usable (empty, not in the "
                        f"training vocabulary of {self.pre.labels.num_outputs} or not a number)")
        return f"{where}: cannot decode the record"

    def message(self, row, seen_count):
        row = int(row.numpy())
        self.failures.append(row)  # a row, or -1 - k: shard k ended early
        self.report.failed_at = row
        return f"make_dataset: {self.diagnose(row, seen_count.numpy(), decode=False)} ({self.hint})"

    def seen_of(self, row):
        import tensorflow as tf

        return tf.gather(self.seen, tf.maximum(-1 - row, 0))

    # ---- the pipeline ----
    @staticmethod
    def raw(parsed, feature):
        import tensorflow as tf

        if len(feature.columns()) == 1:
            return cell(parsed, feature.columns()[0])[0]
        return tf.stack([cell(parsed, c)[0] for c in feature.columns()])

    def examples(self, seed, shuffle, shuffle_buffer, workers, training, augment, modality_dropout, verbose):
        """`(x, y)` (or `x`) examples of every epoch, in order, the failed ones named or skipped."""
        import tensorflow as tf

        def one_epoch(e):
            seed_e = tf.cast(seed, tf.int64) * 1000003 + e
            records = shard_records(self.folder, self.index, self.seen, seed_e if shuffle else None, workers=workers)
            if shuffle:  # windows of records permuted by (seed, epoch, window): exact on resume
                def permute(w, window):
                    n = tf.shape(window[1])[0]
                    order = tf.argsort(tf.random.stateless_uniform([n], tf.stack([seed_e, w])))
                    return tuple(tf.gather(t, order) for t in window)
                records = records.batch(shuffle_buffer).enumerate().map(permute).unbatch()
            # A sentinel after everything: a failure among the last records leaves a gap before it.
            end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(-1, tf.int64), True))
            return records.concatenate(end).enumerate().map(lambda p, r: (e, p, *r))

        def finish(e, p, row, is_sentinel, x, y):
            return self.finish(e, p, row, is_sentinel, x, y, seed, training, augment, modality_dropout)

        parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = tf.data.Dataset.range(1).map(lambda _: self.epoch.assign_add(1)).flat_map(one_epoch)
        ds = ds.map(self.parse).map(self.decode, **parallel).map(finish, **parallel).ignore_errors()
        ds = ds.scan(tf.constant(0, tf.int64), lambda expected, element: self.gap(expected, element, verbose))
        ds = ds.filter(lambda p, is_sentinel, x, y: ~is_sentinel)
        return ds.map(lambda p, is_sentinel, x, y: (x, y) if self.label_of is not None else x)

    def parse(self, e, p, record, shard, is_marker):
        import tensorflow as tf

        def real():
            return tf.io.parse_single_example(record, self.spec)

        def empty():
            return tf.io.parse_single_example(tf.constant(_empty_record()), self.spec)

        parsed = tf.cond(is_marker, empty, real)
        # The marker of a shard says how many of its records were read whole.
        k = tf.maximum(shard, 0)
        truncated = is_marker & (shard >= 0) & (tf.gather(self.seen, k) < tf.gather(self.rows_per_shard, k))
        row = tf.where(is_marker, -1 - shard, parsed[ROW])  # -1 - k: shard k's marker
        with tf.control_dependencies([self.ring.scatter_nd_update([[p % RING]], [row])]):
            p = tf.identity(p)
        return e, p, parsed, is_marker, truncated, shard

    def decode(self, e, p, parsed, is_sentinel, truncated, shard):
        import tensorflow as tf

        from mbm_keras.codecs.asserts import check
        from mbm_keras.data.pipeline import may_be_empty

        x, checks = {}, [check(~truncated, ["truncated shard"])]
        row = parsed[ROW]
        for name, feature in self.features.items():
            raw = self.raw(parsed, feature)
            here = feature.present(raw) & ~is_sentinel
            if not may_be_empty(self.missing_modalities, name):
                checks.append(check(here | is_sentinel, ["empty cell"]))
            x[name] = tf.cond(here, lambda f=feature, r=raw: f.decode(r), feature.empty)
            x[f"{name}_mask"] = tf.reshape(tf.cast(here, tf.float32), [1])
        y = None
        if self.label_of is not None:
            value, present = cell(parsed, self.label_column)
            y, ok = self.label_of(value)
            checks.append(check(ok | is_sentinel, ["label"]))
        with tf.control_dependencies(checks):
            p = tf.identity(p)
        return e, p, row, is_sentinel, x, y

    def finish(self, e, p, row, is_sentinel, x, y, seed, training, augment, modality_dropout):
        import tensorflow as tf

        features = self.features
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
        if self.missing_modalities:
            for j, name in enumerate(features):
                out[f"{name}_mask"] = tf.reshape(masks[j], [1])
        return p, is_sentinel, out, y

    def gap(self, expected, element, verbose):
        """Positions arrive in order; a missing one is a record that failed: named (raise), or counted and
        printed (skip)."""
        import tensorflow as tf

        from mbm_keras.codecs.asserts import check

        p = element[0]
        missing = p > expected
        if self.on_error == "raise":
            bad_row = self.ring[expected % RING]
            reason = tf.cond(missing, lambda: tf.reshape(tf.py_function(self.message, [bad_row, self.seen_of(bad_row)],
                                                                        tf.string), []),
                             lambda: tf.constant(""))
            with tf.control_dependencies([check(~missing, [reason])]):
                p = tf.identity(p)
        else:
            said = tf.cond(missing, lambda: self.say_skipped(expected, p, verbose), lambda: tf.constant(False))
            with tf.control_dependencies([said]):
                p = tf.identity(p)
        return p + 1, (p, *element[1:])

    def say_skipped(self, expected, p, verbose):
        import tensorflow as tf

        rows = tf.map_fn(lambda q: self.ring[q % RING], tf.range(expected, p))
        notes = tf.map_fn(lambda r: tf.reshape(tf.py_function(self.message, [r, self.seen_of(r)], tf.string), []),
                          rows, fn_output_signature=tf.string)
        lost = tf.reduce_sum(tf.map_fn(lambda r: tf.where(r < 0, tf.gather(self.rows_per_shard, tf.maximum(-1 - r, 0))
                                                           - tf.gather(self.seen, tf.maximum(-1 - r, 0)),
                                                           tf.constant(1, tf.int64)), rows))
        with tf.control_dependencies([self.failed.assign_add(lost)]):
            if not verbose:  # the caller reports `dataset.report["errors"]` itself (check_data)
                return tf.reduce_all(tf.strings.length(notes) >= 0)
            return tf.print(tf.strings.reduce_join(notes, separator="\n"), output_stream=sys.stderr) or \
                tf.constant(True)


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
