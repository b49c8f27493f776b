"""`make_dataset()`: a manifest of real files -> batches for `build_fusion_model` models."""

import os
import sys

import numpy as np
import tensorflow as tf

from mbm_keras.codecs.asserts import check
from mbm_keras.data.manifest import DataError, read_manifest
from mbm_keras.codecs.paths import absolute_path, join_in_graph
from mbm_keras.data.preprocessor import column_names, normalize_columns

ON_ERROR = ("raise", "skip")
VERIFY = ("none", "header", "decode")


class RowError:
    """One unusable manifest row: where, which column and file, and why."""

    def __init__(self, manifest, row, column, message, file=None):
        self.row, self.column, self.file, self.message = row, column, file, message
        self.text = f"{manifest.where(row)}, column {column!r}" + (f" ({file})" if file else "") + f": {message}"

    def __repr__(self):
        return self.text


class Report(dict):
    """`dataset.report`: `rows`, `kept`, `skipped` and `errors` (texts).
    Rows found unusable while streaming (verify="none", on_error="skip") are
    added to `skipped` and `errors` as the passes over the dataset find them."""

    failed = None  # bool tf.Variable, one per kept row, set by the pipeline
    diagnose = None
    failed_at = None  # the kept index of the last row that failed while streaming
    explain_failure = None  # () -> its full reason (decoded again), from the main thread

    @property
    def skipped_before(self):
        return dict.__getitem__(self, "skipped")

    def _streamed(self):
        return [] if self.failed is None else np.flatnonzero(self.failed.numpy()).tolist()

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if key in ("skipped", "kept"):
            count = len(self._streamed())
            return value + count if key == "skipped" else value - count
        if key == "errors" and self.diagnose is not None:
            return value + [self.diagnose(k) for k in self._streamed()]
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __repr__(self):
        return repr({k: self[k] for k in self})


def _check_file(path, feature):
    """None if the file exists and looks decodable by its header, else the reason."""
    if not os.path.isfile(path):
        return "file not found"
    try:
        with open(path, "rb") as f:
            if not f.read(1):
                return "the file is empty"
            f.seek(0)
            return feature.check_file(f)
    except OSError as e:
        return f"cannot read the file ({e.strerror})"


def may_be_empty(missing_modalities, feature):
    """Whether `feature`'s cells may be empty under `missing_modalities` (True,
    False, or the names of the features that may be)."""
    if isinstance(missing_modalities, bool) or missing_modalities is None:
        return bool(missing_modalities)
    return feature in missing_modalities


def _prepare_rows(manifest, pre, missing_modalities, allow_outside_root):
    """Host-side pass, by column: each feature's values (paths, texts,
    cells), its presence mask and the labels; returns (arrays, errors). Its
    cost is a few vectorized operations per column: no per-row Python and no
    file system calls beyond one per folder (files are checked as they are read)."""
    values, masks, errors = {}, {}, []
    for name, feature in pre.features.items():
        value, present, bad = feature.host_values(manifest, allow_outside_root)
        failed = np.zeros(len(present), bool)
        for row, e in bad:
            errors.append(RowError(manifest, row, e.column, e.message, file=e.file))
            failed[row] = True
        absent = ~present & ~failed
        if not may_be_empty(missing_modalities, name) and absent.any():
            columns = feature.columns()
            column = columns[0] if len(columns) == 1 else ", ".join(repr(c) for c in columns)
            errors += [RowError(manifest, int(row), column, f"empty {feature.name} cell (pass missing_modalities=True "
                                f"to treat it as absent)") for row in np.flatnonzero(absent)]
        values[name] = value
        masks[name] = present.astype(np.float32)[:, None]
    labels = None
    if pre.labels is not None:
        labels, bad = pre.labels.encode_column(manifest.column(pre.columns["label"]))
        errors += [RowError(manifest, row, pre.columns["label"], message) for row, message in bad]
    return dict(values=values, masks=masks, labels=labels), errors


def file_problem(path, feature, decode=True):
    """Why one file of `feature` cannot be used (missing, a bad header, and
    with `decode` the decoder's own message), or None. The one diagnosis of
    verify="header"/"decode", `mbm-keras check-data` and a row that failed
    while streaming."""
    from mbm_keras.codecs.asserts import explain

    reason = _check_file(path, feature)
    if reason is None and decode:
        try:
            feature.decode(tf.io.read_file(path), header_checked=True)
        except tf.errors.OpError as e:
            reason = f"cannot decode the {feature.name} file: {explain(e)}"
    return reason


def _verify_files(manifest, pre, arrays, keep, verify, progress=False):
    """Checks every file of the kept rows, by its header ("header") or by
    decoding it with the pipeline's own decoders in parallel ("decode");
    returns RowErrors. A file that fails is diagnosed alone by `file_problem`."""
    errors = []
    keep = np.asarray(keep, dtype=np.int64)
    for name, feature in pre.features.items():
        if not feature.file_based:
            continue
        paths = np.empty(len(arrays["values"][name]), dtype=object)
        rows = keep[arrays["masks"][name][keep, 0] > 0]
        paths[rows] = [absolute_path(manifest.root, v) for v in arrays["values"][name][rows]]
        if verify == "header":
            failed = [i for i in rows if _check_file(paths[i], feature)]
        else:

            def decode(i, path, feature=feature):
                return i, tf.reduce_sum(tf.cast(feature.decode(tf.io.read_file(path)), tf.float32))

            ds = tf.data.Dataset.from_tensor_slices((rows, paths[rows].astype(str)))
            ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(256)
            bar = None
            if progress:
                import keras

                print(f"Decoding {len(rows):,} {feature.name} files of column {feature.column!r}", file=sys.stderr)
                bar = keras.utils.Progbar(len(rows), unit_name="file")
            decoded, seen = np.zeros(len(arrays["masks"][name]), bool), 0
            for i, _ in ds.as_numpy_iterator():
                decoded[i] = True
                seen += len(i)
                if bar is not None:
                    bar.update(seen)
            failed = [i for i in rows if not decoded[i]]
            if bar is not None:
                bar.update(len(rows), finalize=True)
        for i in failed:
            reason = file_problem(paths[i], feature) or f"cannot decode the {feature.name} file"
            errors.append(RowError(manifest, int(i), feature.column, reason, file=paths[i]))
    return errors


def make_dataset(
    manifest,
    columns=None,
    *,
    preprocessor,
    training=False,
    batch_size=32,
    shuffle=None,
    seed=0,
    augment=False,
    missing_modalities=False,
    modality_dropout=0.0,
    on_error="raise",
    verify="none",
    cache=None,
    drop_remainder=False,
    deterministic=True,
    allow_outside_root=False,
    initial_epoch=0,
    workers=None,
    verbose=True,
):
    """Reads a manifest of files and returns a batched `tf.data.Dataset` of
    `({"image": ..., "text": ..., "audio": ..., "tabular": ...}, label)`.

    Inputs match `build_fusion_model(**preprocessor.model_kwargs())`: images
    float32 `(h, w, 3)` in [0, 255], text int32 ids, audio float32 mono at the
    model's rate, tabular float32. With `missing_modalities=True` each modality
    also gets `<modality>_mask` (float32 `(1,)`, 1 present / 0 absent), and an
    empty cell means "absent".

    Args:
        manifest: CSV / JSON Lines / Parquet path, or a `Manifest`. Relative
            paths resolve against its folder.
        columns: the column mapping; defaults to the preprocessor's (if given,
            it must be the same).
        preprocessor: a fitted `Preprocessor` (fit it on the training manifest).
        training: shuffles, augments (if `augment`), crops audio at random and
            applies `modality_dropout`.
        batch_size: examples per batch.
        shuffle: shuffle each epoch; default: `training`.
        seed: seed of the shuffle, augmentation and crops (each epoch differs,
            runs with the same seed are identical).
        augment: image flip/crop/colour jitter in training (True, or a dict of
            `augment_image` arguments).
        missing_modalities: emit masks and accept empty cells; or a list of
            the features whose cells may be empty (masks are emitted for all).
        modality_dropout: in training, the probability of hiding each
            modality of an example (never all of them).
        on_error: "raise" (default): the first unusable row raises a
            `DataError` naming the row, column and file; "skip": such rows are
            dropped, counted in `dataset.report` and reported at the end of
            every epoch.
        verify: when files are checked. "none" (default): as they are read,
            so the first batch comes at once whatever the manifest's size; a
            missing, corrupt or oversized file stops the pass naming its
            row, column, file and reason (`on_error="raise"`), or is skipped
            and counted (`on_error="skip"`). "header": before the first
            batch, every file's existence, signature, image pixel count, WAV
            format and audio duration; "decode": also decodes every file once
            (in parallel), as `mbm-keras check-data` does for a whole manifest.
        cache: None, "memory", or a file path prefix for `Dataset.cache`.
        drop_remainder: drop the last partial batch (static shapes; TPUs).
        deterministic: keep element order under parallel decoding.
        allow_outside_root: accept paths outside the manifest's folder.
        initial_epoch: the epoch the first pass over the dataset counts as;
            shuffling and random draws depend on (seed, epoch) only, so a run
            resumed at epoch k sees the data an uninterrupted run saw.
        workers: `(worker_index, num_workers)`, for a shard folder read by
            several workers (`train()` sets it under `multi_worker`): this
            worker reads every `num_workers`-th shard of the epoch's shard
            order, in batches of `batch_size // num_workers` (the global batch
            is split), and every worker takes the same number of steps. A
            manifest is split by `tf.distribute` itself; it takes no `workers`.
        verbose: print what was skipped.

    Returns:
        A `tf.data.Dataset`; `dataset.report` holds `rows`, `kept`,
        `skipped` and `errors` (texts); `dataset.set_epoch(e)` makes the next
        pass over it epoch `e`.

    Examples:
        >>> pre = fit_preprocessor("train.csv", {"image": "path", "text": "caption", "label": "label"})
        >>> train = make_dataset("train.csv", preprocessor=pre, training=True, augment=True)
        >>> val = make_dataset("val.csv", preprocessor=pre)
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}. Received: on_error={on_error!r}")
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}. Received: verify={verify!r}")
    if not 0 <= modality_dropout < 1:
        raise ValueError(f"modality_dropout must be in [0, 1). Received: modality_dropout={modality_dropout!r}")
    if modality_dropout and not missing_modalities:
        raise ValueError("modality_dropout needs missing_modalities=True (the model must receive the masks)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    pre = preprocessor
    if pre is None or not getattr(pre, "fitted", False):
        raise DataError("make_dataset needs a fitted preprocessor: pre = fit_preprocessor(train_manifest, columns)")
    if columns is not None and normalize_columns(columns, pre.feature_modalities)[0] != pre.columns:
        raise ValueError(f"columns={columns!r} differ from the preprocessor's columns {pre.columns!r}")
    from mbm_keras.data.shard_reader import make_shard_dataset
    from mbm_keras.data.shards import is_shard_folder

    if is_shard_folder(manifest):  # written by `pack`: streamed from its TFRecord shards
        return make_shard_dataset(manifest, pre, training=training, batch_size=batch_size, seed=seed, augment=augment,
                                  missing_modalities=missing_modalities, modality_dropout=modality_dropout,
                                  on_error=on_error, drop_remainder=drop_remainder,
                                  shuffle=shuffle if shuffle is not None else training, initial_epoch=initial_epoch,
                                  workers=workers, verbose=verbose)
    if workers is not None:
        raise ValueError(f"workers={workers!r} is for a shard folder (mbm-keras pack); a manifest is split between "
                         f"workers by tf.distribute")
    manifest = read_manifest(manifest)
    manifest.check_columns(column_names(pre.columns, pre.feature_modalities))

    arrays, errors = _prepare_rows(manifest, pre, missing_modalities, allow_outside_root)
    if verify != "none":
        bad_rows = {e.row for e in errors}
        errors += _verify_files(manifest, pre, arrays, [i for i in range(len(manifest)) if i not in bad_rows], verify)
    errors.sort(key=lambda e: e.row)
    bad_rows = {e.row for e in errors}
    if errors and on_error == "raise":
        more = f" (and {len(errors) - 1} more problem(s); on_error='skip' drops such rows)" if len(errors) > 1 else ""
        raise DataError(errors[0].text + more)
    usable = np.ones(len(manifest), bool)
    usable[list(bad_rows)] = False
    keep = np.flatnonzero(usable)
    if not len(keep):
        raise DataError(f"{manifest.path}: no usable rows ({len(errors)} problem(s); first: {errors[0].text})")
    report = Report(rows=len(manifest), kept=len(keep), skipped=len(bad_rows), errors=[e.text for e in errors])
    if errors and verbose:
        print(f"make_dataset: skipping {len(bad_rows)} of {len(manifest)} rows of {manifest.path}:", file=sys.stderr)
        for e in errors[:10]:
            print(f"  {e.text}", file=sys.stderr)
        if len(errors) > 10:
            print(f"  ... {len(errors) - 10} more in dataset.report['errors']", file=sys.stderr)

    ds = _build(pre, arrays, keep, training, batch_size, seed, augment, missing_modalities, modality_dropout,
                cache, drop_remainder, deterministic, shuffle if shuffle is not None else training, report,
                initial_epoch, manifest, on_error, verify)
    ds.report = report
    return ds


def carry_attributes(dataset, derived):
    """`derived` (made from a `make_dataset` dataset by `map` and the like) with the dataset's `report` (the rows
    read and failed) and `set_epoch` (which epoch's shuffle and random draws the next pass makes), which
    tf.data's transformations drop."""
    for attribute in ("report", "set_epoch"):
        if hasattr(dataset, attribute):
            setattr(derived, attribute, getattr(dataset, attribute))
    return derived


def _attach_epoch(ds, epoch):
    """`ds.set_epoch(e)`: the next pass over `ds` counts as epoch `e`.

    Each pass advances the count by itself; setting it at the start of every
    epoch (as `train()` does) keeps the (seed, epoch) data even when something
    else iterates the dataset in between (Keras' `fit` takes one batch to
    build a model compiled under a `tf.distribute` strategy)."""
    ds.set_epoch = lambda e: epoch.assign(int(e) - 1)
    return ds


def _build(pre, arrays, keep, training, batch_size, seed, augment, missing_modalities, modality_dropout,
           cache, drop_remainder, deterministic, shuffle, report, initial_epoch, manifest, on_error, verify):
    stream = _ManifestStream(pre, arrays, keep, report, manifest, on_error, verify, initial_epoch,
                             dict(training=training, seed=seed, augment=augment, missing_modalities=missing_modalities,
                                  modality_dropout=modality_dropout))
    # Every epoch's random draws, and without `cache` its order too, are a
    # function of (seed, epoch): the counter advances once per pass over
    # the dataset, so a run resumed at `initial_epoch` sees what an
    # uninterrupted run saw from there on. (Dataset.shuffle cannot take a
    # per-epoch tensor seed once a global TF seed is set, hence the explicit
    # stateless permutation.) Rows that fail to decode while streaming
    # (verify="header"/"none") are named, or skipped and replaced by the
    # epoch's first rows (a second pass) so that every epoch keeps its length.
    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = (stream.cached(cache, shuffle, parallel) if cache else stream.streamed(shuffle, parallel))
    if on_error == "skip":  # at the end of each epoch, the count so far (an element made to print, then dropped)
        ds = ds.concatenate(tf.data.Dataset.range(1).map(lambda _: stream.say_count(ds.element_spec))
                            .filter(lambda *e: False))
    # The epoch counter hides the length from tf.data; Keras needs it to count steps. Without the second pass
    # (evaluation with on_error="skip") a failed row shortens the pass, so its length stays unknown.
    if stream.passes > 1 or on_error == "raise":
        ds = ds.apply(tf.data.experimental.assert_cardinality(stream.n))
    if pre.labels is None:  # no label column: batches of features alone
        ds = ds.map(lambda x: x)
    return _attach_epoch(batch_examples(ds, pre.features, batch_size, drop_remainder, deterministic), stream.epoch)


class _ManifestStream:
    """A manifest's kept rows as examples: each row's cells taken by position, decoded, finished by (seed,
    epoch, row); a row that fails to decode leaves a gap in the positions (`check_gaps`), named or skipped."""

    def __init__(self, pre, arrays, keep, report, manifest, on_error, verify, initial_epoch, options):
        self.features, self.arrays, self.keep, self.report = pre.features, arrays, keep, report
        self.manifest, self.root, self.on_error = manifest, manifest.root, on_error
        self.header_checked = verify != "none"
        self.__dict__.update(options)  # training, seed, augment, missing_modalities, modality_dropout
        idx = np.asarray(keep, dtype=np.int64)
        cols = {"_row": idx}
        for name in self.features:
            cols[name] = arrays["values"][name][idx]
            cols[f"{name}_mask"] = arrays["masks"][name][idx]
        elements = (cols, arrays["labels"][idx]) if pre.labels is not None else (cols,)
        for feature in self.features.values():  # lookup tables made here, outside the traced functions
            getattr(feature, "trackables", list)()
        self.n = n = len(keep)
        self.columns = tf.nest.map_structure(tf.constant, elements)
        self.epoch = tf.Variable(initial_epoch - 1, dtype=tf.int64, trainable=False, name="epoch")
        # found streaming
        self.failed = report.failed = tf.Variable(tf.zeros([n], tf.bool), trainable=False, name="failed")
        # Training keeps every epoch's length (failed rows replaced by a second pass's first rows); evaluation and
        # prediction read each row once: a replacement row would be counted twice in the metrics.
        self.passes = 2 if on_error == "skip" and self.training else 1
        self.hint = "on_error='skip' drops such rows" if on_error == "raise" else "skipped"
        report.diagnose = self.diagnose
        report.explain_failure = lambda: (None if report.failed_at is None else
                                          f"make_dataset: {self.diagnose(report.failed_at)} ({self.hint})")

    # ---- the two halves of an example's processing ----
    def decode(self, x):
        """The deterministic part: each feature's decode (cacheable)."""
        x = dict(x)
        for name, feature in self.features.items():
            x[name] = tf.cond(tf.greater(x[f"{name}_mask"][0], 0),
                              lambda f=feature, v=x[name]: f.decode(f.read(join_in_graph(self.root, v) if f.file_based
                                                                            else v), header_checked=self.header_checked),
                              feature.empty)
        return x

    def finish(self, x, seeds):
        """The random part: each feature's finish (audio crop, image
        augmentation in training), then modality dropout."""
        x, features, training = dict(x), self.features, self.training
        feature_seeds = tf.random.experimental.stateless_split(seeds[0], len(features))
        for j, (name, feature) in enumerate(features.items()):
            x[name] = feature.finish(x[name], feature_seeds[j] if training else None,
                                     self.augment if training else None)
        if training and self.modality_dropout:
            masks = tf.stack([x[f"{name}_mask"][0] for name in features])
            drop = tf.random.stateless_uniform([len(features)], seeds[2]) < self.modality_dropout
            dropped = tf.where(drop, tf.zeros_like(masks), masks)
            # Never hide every modality of an example.
            masks = tf.cond(tf.reduce_sum(dropped) > 0, lambda: dropped, lambda: masks)
            for j, name in enumerate(features):
                x[f"{name}_mask"] = tf.reshape(masks[j], [1])
        if not self.missing_modalities:
            x = {k: v for k, v in x.items() if not k.endswith("_mask")}
        return x

    def seeds_of(self, e, x):
        return tf.random.experimental.stateless_split(tf.stack([self.seed * 1000003 + e, x["_row"]]), 4)

    @staticmethod
    def without_row(x):
        return {k: v for k, v in x.items() if k != "_row"}

    # ---- naming a failed row ----
    def diagnose(self, k, decode=True):
        """The reason the k-th kept row failed while streaming, found on the
        host as verify="decode" would: a missing file, a bad header, or (with
        `decode`) the decoder's own message. Inside the pipeline it runs
        without `decode`: plain Python, no TensorFlow op (an eager op there
        can wait forever for the threads the pipeline holds); `train()` and
        `dataset.report` then ask again with it, from the main thread."""
        row = int(self.keep[int(k)])
        files = []
        for name, feature in self.features.items():
            if feature.file_based and self.arrays["masks"][name][row, 0] > 0:
                path = absolute_path(self.root, self.arrays["values"][name][row])
                reason = file_problem(path, feature, decode=decode)
                if reason:
                    return RowError(self.manifest, row, feature.column, reason, file=path).text
                files.append((feature, path))
        what = (f"the {files[0][0].name} file" if len(files) == 1 else "the file(s)") if files else "the row"
        named = "".join(f", column {feature.column!r} ({path})" for feature, path in files)
        return (f"{self.manifest.where(row)}{named}: cannot decode {what} (corrupt or truncated data, or values the "
                f"decoder refuses; the decoder's reason: dataset.report['errors'] or mbm-keras check-data)")

    def diagnose_tensor(self, k):
        def message(k):
            self.report.failed_at = int(k.numpy())
            return (f"make_dataset: {self.diagnose(self.report.failed_at, decode=False)} ({self.hint}; "
                    f"mbm-keras check-data lists every such row)")

        return tf.reshape(tf.py_function(message, [k], tf.string), [])

    # ---- positions ----
    def positioned(self, order):
        """(position, kept index) of one pass in `order`, then a sentinel at
        position n whose modalities are all absent (it always decodes): a row
        whose decoding fails leaves a gap in the positions that `check_gaps` finds."""
        pairs = tf.data.Dataset.from_tensor_slices(order).enumerate()
        return pairs.concatenate(tf.data.Dataset.from_tensors((tf.constant(self.n, tf.int64),
                                                               tf.constant(0, tf.int64))))

    def numbered(self, order):
        """(q, kept index) for `passes` passes over `order`, each with its sentinel."""
        one, n = self.positioned(order), self.n
        if self.passes == 1:
            return one
        return tf.data.Dataset.range(self.passes).flat_map(lambda r: one.map(lambda p, i: (r * (n + 1) + p, i)))

    def take(self, p, i):
        x, *y = tf.nest.map_structure(lambda t: tf.gather(t, i), self.columns)
        x = {k: (tf.where(p == self.n, tf.zeros_like(v), v) if k.endswith("_mask") else v) for k, v in x.items()}
        return (p, x, *y)

    def check_gaps(self, ds, order_at):
        """Positions q = pass * (n + 1) + position arrive in order, each pass
        ending with its sentinel; a missing q means a row that failed to
        decode: on_error="raise" fails naming it, "skip" prints the rows
        skipped in the first pass. Drops the sentinels and the positions."""
        n, span = self.n, self.n + 1

        def gap(expected, element):
            q = element[0]
            if self.on_error == "raise":
                bad = order_at(tf.minimum(expected % span, n - 1))
                fine = tf.equal(q, expected)
                reason = tf.cond(fine, lambda: tf.constant(""), lambda: self.diagnose_tensor(bad))
                with tf.control_dependencies([check(fine, [reason])]):
                    q = tf.identity(q)
            else:
                said = tf.cond((q > expected) & (q < span), lambda: self.say_skipped(order_at(tf.range(expected, q))),
                               lambda: tf.constant(False))
                with tf.control_dependencies([said]):
                    q = tf.identity(q)
            return q + 1, (q, *element[1:])

        ds = ds.scan(tf.constant(0, tf.int64), gap).filter(lambda q, *rest: q % span < n)
        return ds.map(lambda q, *rest: tuple(rest))

    def say_skipped(self, skipped):
        notes = tf.map_fn(self.diagnose_tensor, skipped, fn_output_signature=tf.string)
        with tf.control_dependencies([self.failed.scatter_nd_update(skipped[:, None], tf.ones_like(skipped, tf.bool))]):
            note = tf.strings.reduce_join(notes, separator="\n")
        with tf.control_dependencies([tf.print(note, output_stream=sys.stderr)]):
            return tf.constant(True)

    # ---- the two pipelines ----
    def cached(self, cache, shuffle, parallel):
        """Decoded once into `cache`; then each epoch finished by (seed, epoch)."""
        base = self.positioned(tf.range(self.n, dtype=tf.int64)).map(self.take)
        base = base.map(lambda p, x, *y: (p, self.decode(x), *y), **parallel).ignore_errors()
        base = self.check_gaps(base, lambda k: k).cache("" if cache == "memory" else cache)
        if shuffle:  # order from the shuffle's own stream: exact resume needs cache=None
            base = base.shuffle(self.n, seed=self.seed, reshuffle_each_iteration=True)
        if self.passes > 1:
            base = base.repeat(self.passes).take(self.n)
        ds = tf.data.Dataset.range(1).map(lambda _: self.epoch.assign_add(1))
        ds = ds.flat_map(lambda e: base.map(lambda x, *y: (e, x, *y)))
        return ds.map(lambda e, x, *y: (self.finish(self.without_row(x), self.seeds_of(e, x)), *y), **parallel)

    def streamed(self, shuffle, parallel):
        """Each epoch in its (seed, epoch) order, decoded as it is read."""
        # The parallel decode sits outside flat_map (inside it, it costs about
        # 10% more CPU per example); the epoch's order waits in a variable for
        # the gap check to name a failed row.
        n = self.n
        order_var = tf.Variable(tf.range(n, dtype=tf.int64), trainable=False, name="order")

        def one_epoch(e):
            order = tf.range(n, dtype=tf.int64)
            if shuffle:
                order = tf.argsort(tf.random.stateless_uniform([n], tf.stack([tf.constant(self.seed, tf.int64), e])))
                order = tf.cast(order, tf.int64)
            with tf.control_dependencies([order_var.assign(order)]):
                order = tf.identity(order)
            return self.numbered(order).map(lambda q, i: (e, *self.take(q % (n + 1), i)[1:], q))

        ds = tf.data.Dataset.range(1).map(lambda _: self.epoch.assign_add(1)).flat_map(one_epoch)
        ds = ds.map(lambda e, x, *rest: (rest[-1], self.finish(self.without_row(self.decode(x)), self.seeds_of(e, x)),
                                         *rest[:-1]), **parallel)
        ds = self.check_gaps(ds.ignore_errors(), lambda k: tf.gather(order_var, k))  # reads only row k
        return ds.take(n) if self.passes > 1 else ds

    def say_count(self, element_spec):
        """Prints the rows skipped so far; returns zeros shaped like an element (dropped right after)."""
        n, report = self.n, self.report
        streaming = tf.reduce_sum(tf.cast(self.failed, tf.int64))
        total = report.skipped_before + streaming
        text = tf.strings.format("make_dataset: {} of {} rows were skipped (see dataset.report)",
                                 (total, report["rows"]))
        printed = tf.cond(total > 0, lambda: tf.print(text, output_stream=sys.stderr) or tf.constant(True),
                          lambda: tf.constant(False))
        # An epoch keeps its length by reading its good rows again: with fewer than half of them good it
        # cannot, and would end short with TensorFlow's own cardinality error.
        enough = check(self.passes == 1 or (n - streaming) * self.passes >= n, [
            f"make_dataset: too many rows failed while reading {self.manifest.path}: ", streaming, f" of {n} "
            "(skipped; every epoch repeats good rows to keep its length, which needs at least half of them): "
            "mbm-keras check-data lists every such row"])
        with tf.control_dependencies([printed, enough]):
            return tf.nest.map_structure(lambda spec: tf.zeros([d or 0 for d in spec.shape], spec.dtype), element_spec)


def batch_examples(ds, features, batch_size, drop_remainder, deterministic=True):
    """Batches `(x, y)` / `x` examples and applies each feature's batched part
    (text tokenization), then prefetches: the end of every pipeline (manifest or shards)."""

    def finish_batch(x, *y):
        x = dict(x)
        for name, feature in features.items():
            x[name] = feature.finish_batch(x[name])
            if drop_remainder:
                x[name].set_shape([batch_size, *x[name].shape[1:]])
        return (x, *y) if y else x

    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(finish_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE)
