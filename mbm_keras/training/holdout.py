"""Validation by default: with no `data.val`, `train()` holds out a share of
`data.train`'s rows (`data.val_split`, 0.2 by default).

The held-out rows pick the epoch the run keeps (its `model.keras` is the best
validation epoch), stop training early, and choose between the fusion and each
modality's own model (`train.keep_best_of`). The split is stratified by the
label when the label is a class (so every class keeps its share on both sides)
and grouped by `data.group` when the config names a column (a speaker, a
patient, a product never sits on both sides, so validation measures what a
test on new sources measures). The two halves are subsets of the manifest read
in memory (file paths resolve as in `data.train`, and errors name a row by
its number there); `split.json` in the run folder lists the row numbers of each
side, so what the run trained and validated on stays visible and reproducible
(the same seed and rows give the same split).

Nothing is held out (and the run says why) when `data.val` is set,
`data.val_split` is 0, `data.train` is a shard folder or a remote path, or the
share would hold fewer than `MIN_VAL_ROWS` rows (or groups fewer than 2).
"""

import os

MIN_VAL_ROWS = 10
SPLIT = "split.json"


class HoldOut:
    """What `hold_out` decided: `train`/`val` (the manifests to use), `note`
    (the line the run prints) and `summary` (what `summary.json` records)."""

    def __init__(self, train, val, note, summary):
        self.train, self.val, self.note, self.summary = train, val, note, summary


def _class_column(manifest, label, units):
    """True when `label` holds classes worth stratifying by: one value per row
    (no lists) and at most a fifth as many distinct values as there are units."""
    if label is None or label not in manifest.columns:
        return False
    values = manifest.column(label)
    if any(isinstance(v, (list, tuple)) for v in values[:1000]):
        return False
    distinct = len({str(v) for v in values})
    return 1 < distinct <= max(2, units // 5)


def _groups(manifest, group, path):
    """The distinct values of the `data.group` column (None without one); ConfigError when it is missing or
    holds one value."""
    from mbm_keras.errors import ConfigError

    if group is None:
        return None
    if group not in manifest.columns:
        raise ConfigError(f"config: data.group {group!r} is not a column of {path} (its columns: "
                          f"{', '.join(manifest.columns)})")
    groups = {str(v) for v in manifest.column(group)}
    if len(groups) < 2:
        raise ConfigError(f"config: data.group {group!r} holds one value only in {path}; a grouped "
                          f"validation split needs at least two groups (or unset data.group)")
    return groups


def split_rows(manifest, share, seed, stratify=None, group=None):
    """`{"train", "val", "test"}` manifests: the split `hold_out` makes of `manifest` (a `share` of its rows, or of
    its `group` values, held out with `seed`); `tune` reads which groups each seed holds out from it too."""
    from mbm_keras.data.split import split_manifest

    return split_manifest(manifest, (1.0 - share, share, 0.0), stratify=stratify, group=group, seed=seed)


def hold_out(data, out, seed, label=None):
    """Splits `data["train"]` when the config asks for a validation share.

    Args:
        data: the config's `data` section (`train`, `val`, `val_split`, `group`).
        out: the run folder (the split is written to `out/split/`).
        seed: the run's seed (the same seed, the same split).
        label: the label column (stratifies the split when it holds classes).

    Returns:
        a `HoldOut`; its `train`/`val` are the config's own when nothing is held out.

    Raises:
        ConfigError: `data.group` names no column of the manifest, or holds one value only.
    """
    from mbm_keras.data.manifest import read_manifest
    from mbm_keras.data.shards import is_remote, is_shard_folder
    from mbm_keras.io import write_json

    share, group = data["val_split"], data["group"]
    summary = {"source": "data.val" if data["val"] else None, "val_split": share, "group": group}

    def none(why):
        summary["why"] = why
        return HoldOut(data["train"], data["val"], why, summary)

    if data["val"]:
        return none(f"validation: {data['val']} (data.val)")
    if not share:
        return none("no validation data: data.val is unset and data.val_split is 0; the run keeps its last epoch "
                    "and the fusion")
    path = data["train"]
    if is_remote(path) or is_shard_folder(path):
        return none(f"no validation data: data.train ({path}) is a shard folder or a remote path, from which "
                    f"nothing is held out; set data.val (a manifest or shard folder of validation rows)")
    manifest = read_manifest(path)
    groups = _groups(manifest, group, path)
    units = len(manifest) if group is None else len(groups)
    wanted = int(round(share * len(manifest)))
    if wanted < MIN_VAL_ROWS or (group is not None and int(round(share * units)) < 1):
        return none(f"no validation data: {len(manifest)} rows are too few to hold out {share:g} of them (at least "
                    f"{MIN_VAL_ROWS} rows{' and one group' if group else ''}); training on every row, keeping the "
                    f"last epoch and the fusion. Set data.val to validate")
    # Grouped splits assign whole groups; stratifying those by their commonest label would leave most strata
    # with one group (and no validation), so only ungrouped splits are stratified.
    stratify = label if group is None and _class_column(manifest, label, units) else None
    splits = split_rows(manifest, share, seed, stratify=stratify, group=group)
    dropped = 0
    if group is not None and _class_column(manifest, label, len(manifest)):
        # A class found only in the held-out groups is one the model never learns: its rows cannot be scored.
        known = {str(v) for v in splits["train"].column(label)}
        keep = [i for i, v in enumerate(splits["val"].column(label)) if str(v) in known]
        dropped = len(splits["val"]) - len(keep)
        splits["val"] = splits["val"].subset(keep)
    if len(splits["val"]) == 0 and dropped:
        return none(f"no validation data: grouped by data.group {group!r}, every held-out row's class is absent "
                    f"from the training side ({dropped} rows), so none can be scored; group by a column that cuts "
                    f"across the classes (a speaker, a patient), or set data.val")
    if len(splits["val"]) == 0 or len(splits["train"]) == 0:
        return none(f"no validation data: a {share:g} share of {path}'s rows left one side empty; set data.val")
    numbers = {name: [int(n) + 1 for n in splits[name].numbers] for name in ("train", "val")}
    split_file = os.path.join(out, SPLIT)
    os.makedirs(out, exist_ok=True)
    write_json(split_file, {"manifest": path, "seed": seed, "val_split": share, "group": group,
                            "stratified_by": stratify, "rows (1-based)": numbers})
    how = [f"stratified by {stratify!r}"] if stratify else []
    if group is not None:
        val_groups = len({str(v) for v in splits["val"].column(group)})
        how.append(f"grouped by {group!r}: {val_groups} of {units} groups")
    if dropped:
        how.append(f"{dropped} held-out row(s) of classes absent from the training side left out")
    summary.update(source="data.val_split", rows={"train": len(splits["train"]), "val": len(splits["val"])},
                   stratified_by=stratify, rows_file=split_file, left_out=dropped)
    note = (f"No data.val: holding out {len(splits['val'])} of {len(manifest)} rows of data.train for validation "
            f"(data.val_split {share:g}{', ' + ', '.join(how) if how else ''}); the rows of each side: {split_file}")
    return HoldOut(splits["train"], splits["val"], note, summary)
