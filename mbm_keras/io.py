"""Atomic file writing: a crash never leaves a half-written JSON file, export or run folder.

Everything is written into a temporary sibling folder first and moved into
place at the end; an earlier export at the same path survives any failure.
"""

import contextlib
import json
import os
import shutil
import tempfile



def write_json(path, value):
    """Writes `value` as JSON through a temporary file, so `path` is never half written.

    Args:
        path: the JSON file.
        value: anything `json.dump` takes.

    Examples:
        >>> write_json("runs/first/notes.json", {"accuracy": 0.91})
    """
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


def printable(text, newlines=False):
    r"""`text` safe for a terminal: control characters (an escape sequence in a
    catalogue's cell or a file name, a carriage return) are shown escaped, as
    Python writes them, instead of acting on the terminal.

    Args:
        text: any string.
        newlines: keep newlines as line breaks (else they are escaped too).

    Examples:
        >>> printable("red\x1b[2J")   # a cell that would clear the screen
        'red\\x1b[2J'
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or (newlines and ch == "\n") else ascii(ch)[1:-1] for ch in text)


# Written into every export folder; only folders holding it are ever replaced.
EXPORT_MARKER = ".mbm_keras_export"
# Written into the temporary folder of an export in progress, with its process id.
TMP_MARKER = ".mbm_keras_export_tmp"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(dest):
    """Removes the temporary folders that killed exports to `dest` left behind:
    siblings named after it that hold our marker, written by a process that is gone."""
    parent, name = os.path.dirname(dest), os.path.basename(dest)
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if not (entry.startswith(f".{name}.tmp-") or entry.startswith(f".{name}.old-")):
            continue
        folder = os.path.join(parent, entry)
        marker = os.path.join(folder, TMP_MARKER)
        if not os.path.isfile(marker):
            continue  # not ours (an .old- folder is renamed from an export, which holds EXPORT_MARKER)
        try:
            with open(marker) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(dest):
    """Yields a temporary folder that replaces `dest` when the block succeeds.

    `dest` must not exist, be empty, or be an earlier mbm_keras export: a
    folder with other content is refused rather than overwritten.

    Args:
        dest: the folder to (re)place.

    Examples:
        >>> with atomic_output_dir("saved_models/demo") as tmp:
        ...     model.save(os.path.join(tmp, "model.keras"))
    """
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        if not os.path.isdir(dest):
            raise FileExistsError(f"Export destination exists and is not a folder: {dest}")
        if os.listdir(dest) and not os.path.isfile(os.path.join(dest, EXPORT_MARKER)):
            raise FileExistsError(
                f"Export destination {dest} is a non-empty folder that is not an mbm_keras export; "
                f"refusing to replace it. Choose another output folder."
            )
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    _remove_stale_temporaries(dest)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.tmp-", dir=parent)
    with open(os.path.join(tmp, TMP_MARKER), "w") as f:
        f.write(str(os.getpid()))
    try:
        yield tmp
        os.remove(os.path.join(tmp, TMP_MARKER))
        open(os.path.join(tmp, EXPORT_MARKER), "w").close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(dest):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.old-", dir=parent)
        os.rmdir(old)
        os.replace(dest, old)
        with open(os.path.join(old, TMP_MARKER), "w") as f:  # removable if a kill stops us here
            f.write(str(os.getpid()))
    os.replace(tmp, dest)
    if old:
        shutil.rmtree(old, ignore_errors=True)
