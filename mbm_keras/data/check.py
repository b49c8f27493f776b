"""`check_data()`: every row and file of a manifest checked up front, as training would read them."""

import sys

from mbm_keras.data.manifest import read_manifest
from mbm_keras.data.pipeline import _prepare_rows, _verify_files
from mbm_keras.data.preprocessor import column_names
from mbm_keras.io import printable


def check_data(manifest, preprocessor, *, missing_modalities=False, allow_outside_root=False, progress=True,
               verbose=True):
    """Checks a whole manifest: its cells (paths inside the data folder,
    numbers, labels in the vocabulary) and every file, decoded in parallel by
    the pipeline's own decoders, with a progress bar. `make_dataset` checks
    files as it reads them (so training starts at once); this is the explicit
    up-front pass, `mbm-keras check-data` on the command line.

    Args:
        manifest: CSV / JSON Lines / Parquet path, or a `Manifest`.
        preprocessor: a fitted `Preprocessor` (a run folder's, or fitted on
            the training manifest).
        missing_modalities: empty cells are absent modalities, not problems.
        allow_outside_root: accept paths outside the manifest's folder.
        progress: show a progress bar per file column.
        verbose: print the problems found (the first 20).

    Returns:
        dict with `rows`, `usable`, `problems` (count), `errors` (one text
        per problem, naming row, column, file and reason) and `bad_rows`
        (their 0-based positions).

    Examples:
        >>> report = check_data("train.csv", Preprocessor.load("runs/first"))
        >>> report["usable"], report["errors"][:3]
    """
    from mbm_keras.data.shards import is_shard_folder

    if is_shard_folder(manifest):
        report, where = _check_shards(manifest, preprocessor, missing_modalities, progress)
    else:
        report, where = _check_manifest(manifest, preprocessor, missing_modalities, allow_outside_root, progress)
    if verbose:
        errors = report["errors"]
        print(f"{where}: {report['usable']:,} of {report['rows']:,} rows usable, "
              f"{report['problems']:,} problem(s)", file=sys.stderr if errors else sys.stdout)
        for text in errors[:20]:
            print(f"  {printable(text)}", file=sys.stderr)
        if len(errors) > 20:
            print(f"  ... {len(errors) - 20:,} more (check_data(...)['errors'], or --out FILE)", file=sys.stderr)
    return report


def _check_manifest(manifest, pre, missing_modalities, allow_outside_root, progress):
    manifest = read_manifest(manifest)
    manifest.check_columns(column_names(pre.columns, pre.feature_modalities))
    arrays, errors = _prepare_rows(manifest, pre, missing_modalities, allow_outside_root)
    bad = {e.row for e in errors}
    keep = [i for i in range(len(manifest)) if i not in bad]
    errors += _verify_files(manifest, pre, arrays, keep, "decode", progress=progress)
    errors.sort(key=lambda e: e.row)
    bad = {e.row for e in errors}
    report = {"rows": len(manifest), "usable": len(manifest) - len(bad), "problems": len(errors),
              "errors": [e.text for e in errors], "bad_rows": sorted(bad)}
    return report, manifest.path


def _check_shards(folder, pre, missing_modalities, progress):
    """A shard folder read once as training reads it (`on_error="skip"`): the bytes stored in the shards are
    decoded, and missing or truncated shards and unusable records are named."""
    from mbm_keras.data.pipeline import make_dataset
    from mbm_keras.data.shards import check_shard_columns, read_index

    index = read_index(folder)
    check_shard_columns(folder, index, pre)
    ds = make_dataset(folder, preprocessor=pre, batch_size=256, missing_modalities=missing_modalities,
                      on_error="skip", verbose=False)
    bar = None
    if progress:
        import keras

        print(f"Decoding the {index['rows']:,} rows of {len(index['shards'])} shard(s) in {folder}", file=sys.stderr)
        bar = keras.utils.Progbar(index["rows"], unit_name="row")
    seen = 0
    for batch in ds:
        seen += len(next(iter((batch[0] if isinstance(batch, tuple) else batch).values())))
        if bar is not None:
            bar.update(seen)
    if bar is not None:
        bar.update(seen, finalize=True)
    errors = ds.report["errors"]
    return {"rows": index["rows"], "usable": seen, "problems": len(errors), "errors": errors,
            "bad_rows": ds.report.failed_rows()}, folder
