"""Resolving a manifest column of file paths at once (no per-row system calls)."""

import os

import numpy as np

from mbm_keras.data.manifest import DataError, resolve_path
from mbm_keras.modalities.base import CellError


def resolve_paths(manifest, column, cells, present, allow_outside_root=False):
    """The absolute paths of a column's present cells, and `[(row, CellError)]`.

    Relative paths are joined to the manifest's folder as strings. Only the
    cells that could leave the folder (an absolute path, a `..` part, or a
    folder that is a symlink) go through `resolve_path`, which resolves them
    and refuses them outside it with its usual message; so set-up costs a
    string join per row and one `realpath` per distinct folder, whatever the
    number of rows. Whether each file exists is found when it is read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    paths = np.full(len(cells), "", dtype=object)
    rows = np.flatnonzero(present)
    if not len(rows):
        return paths, []
    try:
        texts = pa.array(cells[rows], type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers in a path column (JSON Lines)
        texts = pa.array([str(c) for c in cells[rows]], type=pa.string())
    root = manifest.root.rstrip(os.sep) + os.sep
    absolute = pc.starts_with(texts, os.sep)
    joined = pc.if_else(absolute, texts, pc.binary_join_element_wise(pa.scalar(root), texts, ""))
    suspect = pc.or_(pc.match_substring_regex(texts, r"(^|/)\.\.(/|$)"),
                     pc.and_(absolute, pc.invert(pc.starts_with(texts, root))))
    folders = pc.replace_substring_regex(joined, r"/[^/]*$", "")
    real_root = os.path.realpath(manifest.root)
    linked = {folder for folder in pc.unique(folders).to_pylist()
              if not _inside(os.path.realpath(folder), real_root)}
    if linked:
        suspect = pc.or_(suspect, pc.is_in(folders, value_set=pa.array(sorted(linked), type=pa.string())))
    paths[rows] = joined.to_numpy(zero_copy_only=False)
    errors = []
    if allow_outside_root and not pc.any(suspect).as_py():
        return paths, errors
    for k in np.flatnonzero(suspect.to_numpy(zero_copy_only=False)):
        row = int(rows[k])
        try:
            paths[row] = resolve_path(manifest, row, column, cells[row], allow_outside_root)
        except DataError as e:
            errors.append((row, CellError(column, e.reason, file=str(cells[row]))))
    return paths, errors


def _inside(path, root):
    return os.path.commonpath([path, root]) == root
