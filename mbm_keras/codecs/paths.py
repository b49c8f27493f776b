"""Resolving a manifest column of file paths at once (no per-row system calls: one listing per folder)."""

import os

import numpy as np

from mbm_keras.errors import CellError, DataError


def resolve_paths(manifest, column, cells, present, allow_outside_root=False):
    """A column's present cells as the pipeline carries them, and `[(row, CellError)]`.

    The cells are kept as written (the pipeline joins relative ones to the
    manifest's folder in-graph, so a million rows cost no new strings). Only
    the cells that could leave the folder (an absolute path elsewhere, a `..`
    part, or a folder that is a symlink) go through `resolve_path`, which
    resolves them (their value becomes the resolved absolute path) and refuses
    them outside it with its usual message. Set-up costs a few vectorized
    string operations per column and one `realpath` per distinct folder,
    whatever the number of rows; whether each file exists is found when it is
    read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.full(len(cells), "", dtype=object)
    rows = np.flatnonzero(present)
    if not len(rows):
        return values, []
    given = cells[rows]
    try:
        texts = pa.array(given, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers in a path column (JSON Lines)
        given = np.array([str(c) for c in given], dtype=object)
        texts = pa.array(given, type=pa.string())
    root = manifest.root.rstrip(os.sep) + os.sep
    absolute = pc.starts_with(texts, os.sep)
    suspect = pc.or_(pc.match_substring_regex(texts, r"(^|/)\.\.(/|$)"),
                     pc.and_(absolute, pc.invert(pc.starts_with(texts, root))))
    folders = pc.replace_substring_regex(pc.if_else(absolute, texts, pc.binary_join_element_wise(root, texts, "")),
                                         r"/[^/]*$", "")
    real_root = os.path.realpath(manifest.root)
    linked = {folder for folder in pc.unique(folders).to_pylist()
              if not _inside(os.path.realpath(folder), real_root)}
    if linked:
        suspect = pc.or_(suspect, pc.is_in(folders, value_set=pa.array(sorted(linked), type=pa.string())))
    links = _symlinked_files(pc.unique(folders).to_pylist())
    if links:  # a file that is itself a symlink (one listing per folder finds them): resolved like the rest
        full = pc.if_else(absolute, texts, pc.binary_join_element_wise(root, texts, ""))
        suspect = pc.or_(suspect, pc.is_in(full, value_set=pa.array(sorted(links), type=pa.string())))
    values[rows] = given
    errors = []
    for k in np.flatnonzero(suspect.to_numpy(zero_copy_only=False)):
        row = int(rows[k])
        try:
            values[row] = resolve_path(manifest, row, column, cells[row], allow_outside_root)
        except DataError as e:
            errors.append((row, CellError(column, e.reason, file=str(cells[row]))))
    return values, errors


def absolute_path(root, value):
    """A carried path value as a file path (relative ones join `root`)."""
    return os.path.join(root, value)


def join_in_graph(root, values):
    """`absolute_path` for a string tensor, inside tf.data."""
    import tensorflow as tf

    prefix = tf.constant(root.rstrip(os.sep) + os.sep)
    return tf.where(tf.strings.substr(values, 0, 1) == os.sep, values, tf.strings.join([prefix, values]))


def _symlinked_files(folders):
    """The paths of the symlinks in `folders`: one directory listing each, no per-file system call
    (`os.scandir` reads each entry's type from the listing)."""
    links = set()
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                links.update(os.path.join(folder, e.name) for e in entries if e.is_symlink())
        except OSError:  # a folder that does not exist: its files are reported missing when read
            continue
    return links


def _inside(path, root):
    return os.path.commonpath([path, root]) == root


def resolve_path(manifest, row, column, value, allow_outside_root=False):
    """The absolute path of a file named in a manifest cell.

    Relative paths resolve against the manifest's folder. A path that resolves
    outside that folder (`../..`, an absolute path elsewhere, a symlink out) is
    refused unless `allow_outside_root=True`.
    """
    value = os.fspath(value)
    path = os.path.realpath(os.path.join(manifest.root, value))
    root = os.path.realpath(manifest.root)
    if not allow_outside_root and os.path.commonpath([path, root]) != root:
        reason = (f"path resolves to {path}, outside the data root {root}. To allow it: allow_outside_root=True (Python), "
                  f"data.allow_outside_root: true (run config), or --allow-outside-root (mbm-keras evaluate/export).")
        error = DataError(f"{manifest.where(row)}, column {column!r} ({value}): {reason}")
        error.reason = reason
        raise error
    return path
