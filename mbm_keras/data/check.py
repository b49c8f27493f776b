"""`check_data()`: every row and file of a manifest checked up front, as training would read them."""

import sys

from mbm_keras.data.manifest import read_manifest
from mbm_keras.data.pipeline import _prepare_rows, _verify_files
from mbm_keras.data.preprocessor import column_names


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

    Example:
        >>> report = check_data("train.csv", Preprocessor.load("runs/first"))
        >>> report["usable"], report["errors"][:3]
    """
    manifest = read_manifest(manifest)
    pre = preprocessor
    manifest.check_columns(column_names(pre.columns, pre.feature_modalities))
    arrays, errors = _prepare_rows(manifest, pre, missing_modalities, allow_outside_root)
    bad = {e.row for e in errors}
    keep = [i for i in range(len(manifest)) if i not in bad]
    errors += _verify_files(manifest, pre, arrays, keep, "decode", progress=progress)
    errors.sort(key=lambda e: e.row)
    bad = {e.row for e in errors}
    report = {"rows": len(manifest), "usable": len(manifest) - len(bad), "problems": len(errors),
              "errors": [e.text for e in errors], "bad_rows": sorted(bad)}
    if verbose:
        print(f"{manifest.path}: {report['usable']:,} of {report['rows']:,} rows usable, "
              f"{report['problems']:,} problem(s)", file=sys.stderr if errors else sys.stdout)
        for text in report["errors"][:20]:
            print(f"  {text}", file=sys.stderr)
        if len(errors) > 20:
            print(f"  ... {len(errors) - 20:,} more (check_data(...)['errors'], or --out FILE)", file=sys.stderr)
    return report
