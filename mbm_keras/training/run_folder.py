"""Who may write a run folder: `train()` refuses to mix two runs in one folder.

A folder `train()` writes holds `.mbm_keras_run`: the fingerprint of the run
(the config less its output path, and the SHA-256 of the train and val
manifests). Started again on a folder, `train()`:

- trains into it when it is new or empty;
- resumes when it holds this run's backup (a killed run) with the same fingerprint;
- refuses when the backup's fingerprint differs (naming what changed), when
  the folder holds a finished run, or files that are not a run; `restart=True`
  (`--restart`) discards a run's backup and trains it from scratch, and
  `overwrite=True` (`--overwrite`) replaces any folder as a whole.
"""

import hashlib
import json
import os
import shutil

from mbm_keras.io import write_json

RUN_MARKER = ".mbm_keras_run"
# BackupAndRestore folders: backup-stage1, backup-stage2, backup-single-<modality>.
BACKUP_PREFIX = "backup-"
# Written beside the chief's files by the other workers of a multi-worker run.
WORKERS = "workers"
# Keys that may change between a killed run and its resume: where it runs, not what it computes.
RESUMABLE_CHANGES = ("output", "train.strategy")


class RunFolderError(FileExistsError):
    """The output folder holds something `train()` must not overwrite silently;
    the message says what and which option to use."""


class ResumeMismatchError(ValueError):
    """A killed run is started again with a different config or data; the
    message lists what changed."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(config):
    """What makes two runs the same run: the config (less where it runs) and
    the content of its manifests."""
    flat = _flatten(config)
    data = {}
    for key in ("train", "val"):
        path = config["data"].get(key)
        if path and os.path.isfile(path):
            data[f"data.{key} (file content)"] = _sha256(path)
        elif path:
            from mbm_keras.data.shards import INDEX, is_shard_folder

            if is_shard_folder(path):  # a pack: its index names every shard and its size
                import tensorflow as tf

                with tf.io.gfile.GFile(path.rstrip("/") + "/" + INDEX, "rb") as f:
                    data[f"data.{key} (shard index)"] = hashlib.sha256(f.read()).hexdigest()
    return {"config": {k: v for k, v in flat.items() if k not in RESUMABLE_CHANGES}, "data": data}


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value and prefix.count(".") < 2:
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.loads(json.dumps(value))}  # tuples -> lists, as stored


def _changes(old, new):
    lines = []
    for part in ("config", "data"):
        a, b = old.get(part, {}), new.get(part, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                lines.append(f"{key}: {_short(a.get(key))} (backup) -> {_short(b.get(key))} (now)")
    return lines


def _short(value):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _in_progress(out):
    """A killed run left something to resume: a stage's backup, or a single
    model (train.balance) finished before the kill."""
    backups = [n for n in os.listdir(out) if n.startswith(BACKUP_PREFIX)]
    if any(os.path.isfile(os.path.join(out, b, "training_metadata.json")) for b in backups):
        return True
    singles = os.path.join(out, "singles")
    return os.path.isdir(singles) and any(os.path.isfile(os.path.join(singles, m, "model.keras"))
                                          for m in os.listdir(singles))


def _entries(folder, chief):
    names = set(os.listdir(folder))
    if chief:
        names.discard(WORKERS)
    return names


def _clear(folder, keep=()):
    for name in os.listdir(folder):
        if name in keep:
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _check_overwrite_is_safe(out, protected):
    """--overwrite deletes the folder's content: never the working folder, one
    of its parents, or a folder holding the run's own config or manifests."""
    real = os.path.realpath(out)
    cwd = os.path.realpath(os.getcwd())
    if real == os.path.dirname(real) or os.path.commonpath([real, cwd]) == real:
        raise RunFolderError(f"Refusing to overwrite {out}: it is the working folder or one of its parents")
    for path in protected:
        if path and os.path.commonpath([real, os.path.realpath(path)]) == real:
            raise RunFolderError(f"Refusing to overwrite {out}: it holds {path}, which this run reads")


def prepare_run_folder(out, config, chief=True, restart=False, overwrite=False, protected=()):
    """Makes `out` ready for `train()`; returns True when a killed run resumes there.

    Args:
        out: the run folder.
        config: the checked config (see `load_config`).
        chief: False for the non-chief workers of a multi-worker run (their
            folders are under the chief's `workers/`).
        restart: discard the backup of a run in `out` and train from scratch.
        overwrite: replace whatever `out` holds.
        protected: paths `overwrite` must never delete (the config, the manifests).

    Raises:
        RunFolderError: `out` holds a finished run or foreign files.
        ResumeMismatchError: `out` holds a killed run with another config or data.
    """
    current = fingerprint(config)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunFolderError(f"The run folder {out} exists and is not a folder")
    entries = _entries(out, chief) if os.path.isdir(out) else set()
    marker = os.path.join(out, RUN_MARKER)
    resume = False
    if entries and overwrite:
        _check_overwrite_is_safe(out, protected)
        _clear(out, keep=(WORKERS,) if chief else ())
    elif entries and RUN_MARKER not in entries:
        raise RunFolderError(
            f"The run folder {out} holds files that are not an mbm_keras run ({', '.join(sorted(entries)[:5])}"
            f"{', ...' if len(entries) > 5 else ''}); refusing to write into it. Choose another folder "
            f"(--out / output), or replace it as a whole with --overwrite (overwrite=True)."
        )
    elif entries:
        with open(marker, encoding="utf-8") as f:
            previous = json.load(f)
        in_progress = _in_progress(out)
        finished = os.path.isfile(os.path.join(out, "model.keras"))
        if restart:
            _clear(out, keep=(WORKERS,) if chief else ())
        elif in_progress:
            changes = _changes(previous, current)
            if changes:
                raise ResumeMismatchError(
                    f"{out} holds a killed run started with a different config or data, so it cannot resume:\n  "
                    + "\n  ".join(changes)
                    + f"\nEither resume it with the config it was started with ({os.path.join(out, 'config.json')}), "
                    f"or discard its backup and train from scratch with --restart (restart=True)."
                )
            resume = True
        elif finished:
            raise RunFolderError(
                f"{out} holds a finished run; refusing to overwrite it. Choose another folder (--out / output), "
                f"or train it again from scratch with --overwrite (overwrite=True)."
            )
        else:  # started, killed before its first epoch ended: nothing to keep
            _clear(out, keep=(WORKERS,) if chief else ())
    os.makedirs(out, exist_ok=True)
    if not resume:
        write_json(marker, current)
        write_json(os.path.join(out, "config.json"), config)
    return resume
