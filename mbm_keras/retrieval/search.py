"""A trained retrieval run's towers applied to manifests and to one query: `embed`, `build_index`, `search`.

What `mbm-keras embed`, `index` and `search` call. Rows go through the run's own
preprocessing (`make_dataset`), a query through the same raw-input path as
`predict`, so the catalogue and the query are encoded as in training.
"""

import contextlib
import hashlib
import os
import sys

import numpy as np

from mbm_keras.data.manifest import DataError, read_manifest
from mbm_keras.retrieval.index import Index, IndexFileError

TOWERS = ("query", "candidate")


def model_id(run):
    """A short hash of a run's `model.keras`: what an index records of the model that embedded it."""
    from mbm_keras.run import Run

    digest = hashlib.sha256()
    with open(Run(run).existing_model_file(), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_tower(run, tower):
    """`(tower model, its preprocessor, its feature names)` of a retrieval run."""
    from mbm_keras.deploy.exporting import load_run_model

    if tower not in TOWERS:
        raise ValueError(f"tower must be one of {TOWERS}. Received: tower={tower!r}")
    model, pre = load_run_model(run)
    try:
        tower_model = model.get_layer(f"{tower}_tower")
    except ValueError:
        raise ValueError(f"{run} is not a retrieval run (its model has no {tower}_tower; train one with "
                         f"task.kind: retrieval)") from None
    names = [n for n in tower_model.input if not n.endswith("_mask")]
    return tower_model, pre.subset(names), names


def embed(run, data, tower="candidate", batch_size=64, on_error="raise", progress=True):
    """Embeds every row of a manifest with one tower of a retrieval run.

    Args:
        run: the run folder (or its `model.keras`).
        data: a manifest holding the tower's columns (a catalogue needs no
            query columns and no labels).
        tower: "candidate" (default) or "query".
        batch_size: rows per batch.
        on_error: "raise": a row whose file is missing or does not decode
            raises `DataError` naming it; "skip": such rows are left out and
            listed.
        progress: progress bars.

    Returns:
        `(vectors (n, d), rows)`: one dict per embedded row with its manifest
        row number and its cells: the tower's first (file paths as written),
        then the label when the manifest has the run's label column, then
        every other column of the manifest (descriptions, ids).

    Examples:
        >>> vectors, rows = embed("runs/search", "catalogue.csv")
    """
    from mbm_keras.data import make_dataset
    from mbm_keras.data.check import check_data
    from mbm_keras.data.preprocessor import column_names

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: on_error={on_error!r}")
    tower_model, pre, names = load_tower(run, tower)
    manifest = read_manifest(data)
    label = pre.columns.get("label")
    if label is not None and label not in manifest.columns:  # a catalogue without labels
        pre = pre.without_labels()
    masks = any(n.endswith("_mask") for n in tower_model.input)
    report = check_data(manifest, pre, missing_modalities=masks, progress=progress, verbose=False)
    if report["problems"] and on_error == "raise":
        more = f" (and {report['problems'] - 1} more; on_error='skip' leaves such rows out)" if report["problems"] > 1 else ""
        raise DataError(report["errors"][0] + more)
    keep = [i for i in range(len(manifest)) if i not in set(report["bad_rows"])]
    if report["problems"]:
        print(f"embed: leaving out {len(manifest) - len(keep)} of {len(manifest)} rows of {manifest.path}:",
              file=sys.stderr)
        for text in report["errors"][:10]:
            print(f"  {text}", file=sys.stderr)
    if not keep:
        raise DataError(f"{manifest.path}: no usable rows")
    kept = manifest.subset(keep)
    ds = make_dataset(kept, preprocessor=pre, batch_size=batch_size, missing_modalities=masks, verbose=False)
    from mbm_keras.training.balance import select_inputs

    vectors = tower_model.predict(select_inputs(ds, tower_model.input), verbose=1 if progress else 0)
    columns = column_names(pre.columns, pre.feature_modalities) + ([pre.columns["label"]] if pre.labels else [])
    columns += [c for c in kept.columns if c not in columns]  # the rest of the catalogue row (descriptions, ids)
    cells = {c: kept.column(c) for c in columns}
    rows = [{"row": i + 1, **{c: (None if cells[c][j] is None else str(cells[c][j])) for c in columns}}
            for j, i in enumerate(keep)]
    return np.asarray(vectors, np.float32), rows


def build_index(run, data, out, kind="auto", add=False, on_error="raise", progress=True, lock_timeout=600):
    """Embeds a catalogue with the candidate tower and writes (or, with
    `add`, extends) the index at `out`. Returns the `Index`.

    Writers of one index take turns: the rows are embedded first, then the
    index is read, extended and written under a lock file (`OUT.lock`), so
    two `add`s at once both keep their rows. A writer that waits more than
    `lock_timeout` seconds for another gives up naming the lock.
    """
    out = os.fspath(out)
    if os.path.isdir(out):
        raise IsADirectoryError(f"--out {out} is a folder; an index is one file (e.g. {os.path.join(out, 'catalogue.index')})")
    identity = model_id(run)
    if add:
        Index.load(out, model=identity)  # refused now, before embedding, if it is another model's or damaged
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    vectors, rows = embed(run, data, "candidate", on_error=on_error, progress=progress)
    folder = os.path.dirname(os.path.abspath(read_manifest(data).path))
    for row in rows:
        row["_folder"] = folder  # relative paths in rows resolve against their manifest's folder
    with index_lock(out, lock_timeout):
        if add:
            index = Index.load(out, model=identity)  # again: another writer may have added rows meanwhile
            index.add(vectors, rows)
        else:
            index = Index.build(vectors, rows, kind=kind, model=identity)
            index.info = {"run": os.path.abspath(run)}
        index.save(out)
    return index


@contextlib.contextmanager
def index_lock(path, timeout=600):
    """Holds `PATH.lock` (filelock: an OS lock, released when the process dies) while an index is rewritten."""
    import filelock

    lock = filelock.FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"Waiting for another writer of {path} (it holds {path}.lock) ...", file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise TimeoutError(f"{path}: another process has held {path}.lock for over {timeout} s; "
                               f"nothing was written (run again when it has finished)") from None
    try:
        yield
    finally:
        lock.release()


def embed_query(run, values):
    """The query tower's embedding `(1, d)` of one query: `values` maps its
    features to a file path (image, audio, ...) or a text."""
    import tensorflow as tf

    from mbm_keras.deploy.raw_inputs import raw_to_inputs

    tower_model, pre, names = load_tower(run, "query")
    given = {k: v for k, v in values.items() if v is not None}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"The query tower has no feature {unknown[0]!r}; it takes {', '.join(names)}")
    if not given:
        raise ValueError(f"A query needs at least one of its features: "
                         f"{', '.join(f'{n} ({pre.feature_modalities[n]})' for n in names)}")
    inputs = list(tower_model.input)
    missing = [n for n in names if n not in given and f"{n}_mask" not in inputs]
    if missing:
        raise ValueError(f"The query needs {missing[0]!r} (the model was trained without missing_modalities)")
    raw = {name: tf.constant([feature.raw_example(given.get(name), name, feature.raw_spec().shape, feature.columns())])
           for name, feature in pre.features.items()}
    from mbm_keras.deploy.predicting import _run

    try:
        x = {k: v.numpy() for k, v in _run(lambda **r: raw_to_inputs(r, pre, inputs), raw).items()}
    except ValueError as e:  # TensorFlow's check of an input, as one line
        raise ValueError(f"the query: {e}") from None
    return np.asarray(tower_model.predict(x, verbose=0), np.float32)


def search(index, values, run=None, k=10):
    """The `k` best rows of `index` for one query: a list of
    `(rank, score, row)`. `run` defaults to the run that built the index."""
    index = index if isinstance(index, Index) else Index.load(index)
    run = run or getattr(index, "info", {}).get("run")
    if run is None:
        raise ValueError("search needs the retrieval run that embeds the query (--model RUN)")
    if index.model is not None and index.model != model_id(run):
        raise IndexFileError(f"the index was built by another model ({index.model}) than {run} ({model_id(run)}); "
                             f"index the catalogue again with this run")
    ids, scores = index.search(embed_query(run, values), k=k)
    return [(rank + 1, float(score), index.rows[i]) for rank, (i, score) in enumerate(zip(ids[0], scores[0]))]
