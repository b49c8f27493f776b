"""Stratified and group-aware train/validation/test splits of a manifest."""

import csv
import json
import os

import numpy as np

from mbm_keras.data.manifest import Manifest, read_manifest


def _fractions(fractions):
    names = ("train", "val", "test")
    if isinstance(fractions, dict):
        fractions = [fractions.get(n, 0.0) for n in names]
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three numbers >= 0 summing to 1 (train, val, test). Received: {fractions}")
    return dict(zip(names, fractions))


def _allocate(n, fractions):
    """Integer counts per split summing to n, by largest remainder."""
    raw = {k: n * f for k, f in fractions.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def split_manifest(manifest, fractions=(0.8, 0.1, 0.1), *, stratify=None, group=None, seed=0, out_dir=None):
    """Splits a manifest into train/val/test.

    Args:
        manifest: a path or a `Manifest`.
        fractions: (train, val, test), summing to 1.
        stratify: a column whose values keep their proportions in every split
            (usually the label).
        group: a column whose values never straddle splits (a speaker, a
            product, a patient); groups are assigned whole, stratified by their
            most common `stratify` value when both are given.
        seed: the same seed gives the same split.
        out_dir: if given, writes `train.csv`, `val.csv`, `test.csv` there, with
            paths rewritten relative to it, and returns their paths instead.

    Returns:
        `{"train": Manifest, "val": Manifest, "test": Manifest}` (or paths).

    Examples:
        >>> splits = split_manifest("all.csv", stratify="label", group="speaker", seed=1)
        >>> len(splits["train"]), len(splits["test"])
    """
    manifest = read_manifest(manifest)
    fractions = _fractions(fractions)
    for column in (stratify, group):
        if column is not None:
            manifest.check_columns([column])
    rng = np.random.default_rng(seed)
    # Units that move together: one per row, or one per group.
    if group is None:
        units = [[i] for i in range(len(manifest))]
    else:
        by_group = {}
        for i, row in enumerate(manifest.rows):
            by_group.setdefault(row[group], []).append(i)
        units = [by_group[k] for k in sorted(by_group, key=str)]
    strata = {}
    for u, members in enumerate(units):
        if stratify is None:
            key = None
        else:
            values = [manifest.rows[i][stratify] for i in members]
            key = max(sorted(set(values), key=str), key=values.count)
        strata.setdefault(key, []).append(u)
    assignment = {"train": [], "val": [], "test": []}
    for key in sorted(strata, key=str):
        members = strata[key]
        order = rng.permutation(len(members))
        counts = _allocate(len(members), fractions)
        start = 0
        for name in ("train", "val", "test"):
            for j in order[start : start + counts[name]]:
                assignment[name].extend(units[members[j]])
            start += counts[name]
    splits = {name: manifest.subset(sorted(idx)) for name, idx in assignment.items()}
    if out_dir is None:
        return splits
    return {name: write_manifest(m, os.path.join(out_dir, f"{name}.csv")) for name, m in splits.items()}


def write_manifest(manifest, path, path_columns=None):
    """Writes a `Manifest` as CSV (through a temporary file), rewriting relative
    paths so they still point at the same files from the new file's folder.

    Args:
        manifest: a `Manifest` (e.g. from `read_manifest` or `split_manifest`).
        path: the file to write: CSV, or JSON Lines when it ends in `.jsonl`; its folder is created.
        path_columns: the columns holding file paths; default: every column
            whose values all name existing files.

    Returns:
        The absolute path written.

    Examples:
        >>> m = read_manifest("data/all.csv")
        >>> write_manifest(m.subset(range(100)), "data/first100.csv")
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if path_columns is None:
        path_columns = [
            c
            for c in manifest.columns
            if any(isinstance(r[c], str) for r in manifest.rows)
            and all(r[c] is None or (isinstance(r[c], str) and os.path.isfile(os.path.join(manifest.root, r[c]))) for r in manifest.rows)
        ]
    jsonl = path.endswith((".jsonl", ".json"))  # JSON Lines keeps lists, numbers and empty cells as they are
    tmp = f"{path}.{os.getpid()}.tmp"  # per process: two writers of one manifest cannot collide
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = None if jsonl else csv.DictWriter(f, fieldnames=manifest.columns)
        if writer is not None:
            writer.writeheader()
        for row in manifest.rows:
            out = {}
            for c in manifest.columns:
                v = row[c]
                if c in path_columns and v is not None and not os.path.isabs(v):
                    v = os.path.relpath(os.path.join(manifest.root, v), folder)
                if jsonl:
                    out[c] = v.item() if hasattr(v, "item") else v
                else:
                    out[c] = "" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else v)
            if jsonl:
                f.write(json.dumps(out, ensure_ascii=False) + "\n")
            else:
                writer.writerow(out)
    os.replace(tmp, path)
    return path


__all__ = ["Manifest", "split_manifest", "write_manifest"]
