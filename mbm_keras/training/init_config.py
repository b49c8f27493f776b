"""`mbm-keras init`: a first commented run.yaml for a user's own manifest.

Each column's modality is guessed from a sample of its cells: file paths by
their extension (each modality's `EXTENSIONS`), numbers, a few repeated words
(a category), sentences (text), the label by its name. A column that fits no
rule, or fits two, is listed and left out of the config, never guessed
silently; so is an identifier or a train/val/test column.
"""

import os
import re

import numpy as np

LABEL_NAMES = ("label", "labels", "target", "class", "category", "y")
SPLIT_NAMES = ("split", "fold", "subset", "set")
GROUP_NAMES = {"speaker", "subject", "patient", "user", "session", "source", "group", "author", "site", "device"}
SPLIT_VALUES = {"train", "training", "val", "valid", "validation", "dev", "test", "testing"}
ID_NAMES = re.compile(r"(^|_)(id|idx|index|key|uuid)$", re.IGNORECASE)
MAX_CATEGORIES = 50  # more distinct values than this (and not sentences) is not a category


class Guess:
    """What `init` made of one column: `kind` (a modality, "label", or "left
    out"), `why` (one line), and `ambiguous` when the user must decide."""

    def __init__(self, column, kind, why, ambiguous=False, tabular=None):
        self.column, self.kind, self.why, self.ambiguous, self.tabular = column, kind, why, ambiguous, tabular

    def as_dict(self):
        return {"column": self.column, "kind": self.kind, "tabular": self.tabular, "why": self.why,
                "ambiguous": self.ambiguous}


def _number(value):
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _file_modalities():
    from mbm_keras.modalities import get_modality, list_modalities

    out = {}
    for name in list_modalities():
        for ext in get_modality(name).EXTENSIONS:
            out.setdefault(ext.lower(), []).append(name)
    return out


def guess_column(column, cells, label=None):
    """The `Guess` for one column from its sampled non-empty `cells`.

    Args:
        column: the column's name.
        cells: a sample of its cells (strings or numbers; None for empty).
        label: the column the user named as the label, if any.

    Returns:
        A `Guess`.

    Examples:
        >>> guess_column("photo", ["a/1.jpg", "a/2.jpg"]).kind
        'image'
    """
    values = [v for v in cells if v is not None and str(v).strip() != ""]
    if column == label:
        return Guess(column, "label", "named by --label")
    if not values:
        return Guess(column, "left out", "every sampled cell is empty", ambiguous=True)
    strings = [str(v).strip() for v in values]
    distinct = len(set(strings))
    lower = column.lower()
    if label is None and lower in LABEL_NAMES:
        return Guess(column, "label", f"its name; {distinct} classes in the sample")
    if lower in SPLIT_NAMES and set(s.lower() for s in strings) <= SPLIT_VALUES:
        found = sorted(set(strings))
        advice = (": write one manifest per split (mbm_keras.data.split_manifest) for data.train and data.val"
                  if len(found) > 1 else "")
        return Guess(column, "left out", f"a split column ({', '.join(found)}){advice}")
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        whole = all(float(n).is_integer() for n in numbers)
        if whole and distinct == len(values) and len(values) >= 20 and ID_NAMES.search(column):
            return Guess(column, "left out", "an identifier (distinct whole numbers, named like an id)")
        if whole and distinct <= 10 and len(values) >= 20:
            return Guess(column, "tabular", f"numbers, but only {distinct} distinct whole values (a number or a "
                                            f"category? read as a number)", ambiguous=True, tabular="numeric")
        return Guess(column, "tabular", f"numbers ({min(numbers):g} to {max(numbers):g})", tabular="numeric")
    extensions = [os.path.splitext(s)[1].lower() for s in strings]
    with_ext = [e for e in extensions if e and " " not in e and len(e) <= 6]
    if len(with_ext) >= 0.9 * len(strings):
        known = _file_modalities()
        counts = {}
        for ext in with_ext:
            counts[ext] = counts.get(ext, 0) + 1
        top = max(counts, key=counts.get)
        claimed = known.get(top, [])
        names = "/".join(sorted(counts))
        if len(claimed) == 1 and all(len(known.get(e, [])) == 1 and known[e] == claimed for e in counts):
            return Guess(column, claimed[0], f"{names} file paths")
        if len(claimed) > 1:
            return Guess(column, "left out", f"{names} files, which several modalities read ({', '.join(claimed)}): "
                                             f"add it to columns: as the one it is", ambiguous=True)
        if not claimed and all(e not in known for e in counts):
            return Guess(column, "left out", f"{names} file paths, which no registered modality reads",
                         ambiguous=True)
        return Guess(column, "left out", f"file paths of mixed kinds ({names})", ambiguous=True)
    words = np.array([len(s.split()) for s in strings])
    if np.mean(words) >= 3:
        return Guess(column, "text", f"free text, {np.mean(words):.1f} words on average")
    if any(n is not None for n in numbers) and sum(n is not None for n in numbers) >= 0.5 * len(values):
        return Guess(column, "left out", "mostly numbers, some not: clean it, or name it in columns:", ambiguous=True)
    if distinct <= MAX_CATEGORIES and distinct <= max(2, 0.5 * len(values)):
        return Guess(column, "tabular", f"{distinct} distinct short values: a category", tabular="categorical")
    if distinct == len(values) and ID_NAMES.search(column):
        return Guess(column, "left out", "an identifier (every value distinct, named like an id)")
    return Guess(column, "left out", f"{distinct} distinct short strings in {len(values)} rows: a category with many "
                                     f"values, names, or ids? add it to columns: (as tabular categorical or text) if "
                                     f"it helps", ambiguous=True)


def _resolve(root, path):
    return path if os.path.isabs(path) else os.path.join(root, path)


def _image_size(manifest, column, limit=5):
    """The most common (height, width) of a few of the column's images."""
    import tensorflow as tf

    sizes = []
    for path in [p for p in manifest.column(column) if p][:limit]:
        try:
            image = tf.io.decode_image(tf.io.read_file(_resolve(manifest.root, path)), expand_animations=False)
            sizes.append(tuple(int(d) for d in image.shape[:2]))
        except (tf.errors.OpError, ValueError):
            continue
    return max(set(sizes), key=sizes.count) if sizes else None


def _wav_lengths(manifest, column, limit=20):
    """(sample rate, median samples) of the column's first readable WAV files."""
    import wave

    rates, frames = [], []
    for path in [p for p in manifest.column(column) if p][:limit]:
        try:
            with wave.open(_resolve(manifest.root, path)) as w:
                rates.append(w.getframerate())
                frames.append(w.getnframes() / w.getframerate())
        except (OSError, EOFError, wave.Error):
            continue
    if not rates:
        return None
    rate = min(max(set(rates), key=rates.count), 16000)
    return rate, int(round(float(np.median(frames)) * rate))


def _series_length(manifest, column, limit=10):
    lengths = []
    for path in [p for p in manifest.column(column) if p][:limit]:
        full = _resolve(manifest.root, path)
        try:
            if full.lower().endswith(".npy"):
                lengths.append(int(np.load(full, mmap_mode="r").shape[0]))
            else:
                with open(full, encoding="utf-8") as f:
                    lengths.append(sum(1 for _ in f) - 1)
        except (OSError, ValueError):
            continue
    return int(np.median(lengths)) if lengths else None


def _preprocessing(manifest, features, sample):
    """data.preprocessing guesses, each with its comment."""
    out = []
    by_modality = {}
    for column, modality in features.items():
        by_modality.setdefault(modality, []).append(column)
    if "image" in by_modality:
        size = _image_size(manifest, by_modality["image"][0])
        if size and max(size) <= 96:
            out.append(("image_size", list(size), "the images' own size"))
        else:
            seen = f"they are {size[0]}x{size[1]}" if size else "no image could be read"
            out.append(("image_size", [224, 224], f"what ImageNet backbones expect ({seen})"))
    if "text" in by_modality:
        counts = [len(str(v).split()) for c in by_modality["text"] for v in sample.column(c) if v is not None]
        length = int(min(256, max(8, np.percentile(counts, 95)))) if counts else 64
        out.append(("text_length", length, "tokens per text: 95% of the sampled texts fit"))
    if "audio" in by_modality:
        wav = _wav_lengths(manifest, by_modality["audio"][0])
        if wav:
            out.append(("sample_rate", wav[0], "Hz; the files are resampled to it"))
            out.append(("audio_length", wav[1], f"samples ({wav[1] / wav[0]:.2f} s, the median clip)"))
        else:
            out.append(("sample_rate", 16000, "Hz (no WAV file could be read to measure)"))
            out.append(("audio_length", 16000, "samples (1 s)"))
    if "timeseries" in by_modality:
        length = _series_length(manifest, by_modality["timeseries"][0])
        if length:
            out.append(("timeseries_length", min(length, 1024), "steps (the median file; longer ones are cut)"))
    return out


def _sibling_val(path):
    """`val.csv` (or valid/validation) beside a manifest named train.*, if there is one."""
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    if not stem.lower().startswith("train"):
        return None
    for other in ("val", "valid", "validation", "dev"):
        candidate = os.path.join(folder, other + stem[5:] + ext)
        if os.path.isfile(candidate):
            return candidate
    return None


def _yaml(value):
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.strip()  # a scalar's end-of-document


def _identifier(column):
    name = re.sub(r"\W", "_", column).strip("_") or "feature"
    return name if name[0].isalpha() else f"f_{name}"


def init_config(data, out="run.yaml", label=None, sample=1000, overwrite=False):
    """Writes a commented run.yaml for the manifest `data` and returns the
    guesses: each column's modality, why, and which are ambiguous (left out).

    Args:
        data: the training manifest (`.csv`, `.jsonl`, `.parquet`).
        out: the config file to write; its paths are relative to it.
        label: the label column (default: a column named label, target, class...).
        sample: how many rows to read for the guesses.
        overwrite: replace an existing `out`.

    Returns:
        dict with `config` (the path written), `columns` (one dict per column:
        `column`, `kind`, `why`, `ambiguous`), `ambiguous` (their names).

    Examples:
        >>> report = init_config("data/train.csv", "run.yaml")
        >>> report["ambiguous"]   # columns left out for the user to decide
    """
    from mbm_keras.data import read_manifest

    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite to replace it")
    manifest = read_manifest(data)
    if label is not None and label not in manifest.columns:
        raise ValueError(f"--label {label!r} is not a column of {manifest.path}; its columns: "
                         f"{', '.join(manifest.columns)}")
    rows = min(len(manifest), sample)
    sample_rows = manifest.subset(range(rows))
    guesses = [guess_column(c, list(sample_rows.column(c)), label) for c in manifest.columns]
    label_guess = _the_label(manifest, guesses)
    used = [g for g in guesses if g.kind not in ("label", "left out")]
    if not used:
        raise ValueError(f"{manifest.path}: no column could be used as an input; "
                         + "; ".join(f"{g.column}: {g.why}" for g in guesses if g.kind != "label"))
    base = os.path.dirname(os.path.abspath(out))
    lines = [
        f"# A first run config for {os.path.basename(manifest.path)}, written by mbm-keras init.",
        f"# Column guesses from its first {rows:,} rows; check them, then: mbm-keras train --config "
        f"{os.path.basename(out)}",
        "# Paths are relative to this file. mbm-keras train --help lists every key.",
        "",
    ]
    lines += _data_lines(manifest, guesses, used, label_guess, sample_rows, base)
    lines += _model_lines(used)
    stem = os.path.splitext(os.path.basename(manifest.path))[0]
    lines += ["", "train:", "  epochs: 10", "  learning_rate: 0.001",
              "  # early_stopping_patience: 5       # the default whenever there is validation data",
              "", f"output: runs/{_identifier(stem)}                  # the run folder", ""]
    _write_checked("\n".join(lines), out, base)
    ambiguous = [g.column for g in guesses if g.ambiguous]
    return {"config": out, "columns": [g.as_dict() for g in guesses], "ambiguous": ambiguous}


def _the_label(manifest, guesses):
    """The one guess that is the label, holding at least two values; ValueError saying what to pass otherwise."""
    labels = [g for g in guesses if g.kind == "label"]
    if not labels:
        candidates = [g.column for g in guesses if g.tabular == "categorical"]
        raise ValueError(f"{manifest.path}: no label column (none is named {', '.join(LABEL_NAMES)}); name it with "
                         f"--label COLUMN" + (f" (categories in the manifest: {', '.join(candidates)})"
                                              if candidates else ""))
    if len(labels) > 1:
        raise ValueError(f"{manifest.path}: several columns look like the label ({', '.join(g.column for g in labels)});"
                         f" name the one to predict with --label COLUMN")
    values = {v for v in manifest.column(labels[0].column) if v is not None}
    if len(values) < 2:
        shown = f"one value ({next(iter(values))!r})" if values else "no value"
        raise ValueError(f"{manifest.path}: the label column {labels[0].column!r} holds {shown} in its "
                         f"{len(manifest):,} row(s); a model needs at least two classes (or two target values) to "
                         f"learn from: pass the whole training manifest")
    return labels[0]


def _named(used):
    """Whether two columns share a modality (then every column is a named feature)."""
    kinds = [g.kind for g in used if g.kind != "tabular"]
    return len(kinds) != len(set(kinds))


def _data_lines(manifest, guesses, used, label_guess, sample_rows, base):
    """The data section: paths, columns (with each guess's reason), preprocessing."""

    def rel(path):  # relative to the config when near it, else absolute
        path = os.path.relpath(os.path.abspath(path), base)
        return os.path.abspath(os.path.join(base, path)) if path.startswith(os.path.join("..", "..")) else path

    val = _sibling_val(manifest.path)
    lines = [
        "data:",
        f"  train: {_yaml(rel(manifest.path))}",
        (f"  val: {_yaml(rel(val))}                 # scored after every epoch; the run keeps the best epoch"
         if val else "  # val: val.csv                   # without it, data.val_split (0.2) of the rows are held out"),
    ]
    groups = [g.column for g in guesses if g.kind == "left out" and g.column.lower() in GROUP_NAMES]
    if not val:
        lines.append(f"  # group: {_yaml(groups[0]) if groups else 'speaker'}".ljust(36)
                     + "# a column whose values never sit on both sides of that split (test on new sources)")
    lines.append("  columns:")
    named = _named(used)
    for g in guesses:
        if g.kind not in ("label", "left out", "tabular"):
            lines.append(f"    {_identifier(g.column) if named else g.kind}: {_yaml(g.column)}".ljust(36)
                         + f"# {g.kind}: {g.why}")
    numeric = [g.column for g in used if g.tabular == "numeric"]
    categorical = [g.column for g in used if g.tabular == "categorical"]
    if numeric or categorical:
        lines.append("    tabular:                        # numbers and categories, one feature")
        if numeric:
            lines.append(f"      numeric: {_yaml(numeric)}".ljust(36) + "# standardized")
        if categorical:
            lines.append(f"      categorical: {_yaml(categorical)}".ljust(36) + "# one-hot")
        lines += [f"      # {g.column}: {g.why}" + (" <- check" if g.ambiguous else "") for g in used if g.tabular]
    lines.append(f"    label: {_yaml(label_guess.column)}".ljust(36) + f"# the label: {label_guess.why}")
    lines += [f"    # {g.column}: left out ({'ambiguous: ' if g.ambiguous else ''}{g.why})"
              for g in guesses if g.kind == "left out"]
    prep = _preprocessing(manifest, {g.column: g.kind for g in used if g.kind != "tabular"}, sample_rows)
    if prep:
        lines.append("  preprocessing:")
        lines += [f"    {key}: {_yaml(value)}".ljust(36) + f"# {why}" for key, value, why in prep]
    return lines + ["  batch_size: 32", ""]


def _model_lines(used):
    """The model section: a starter encoder per modality (or per named feature), the fusion, dropout."""
    from mbm_keras.encoders.base import list_encoders
    from mbm_keras.fusions import list_fusions
    from mbm_keras.modalities import get_modality, list_modalities

    files = {g.column: g.kind for g in used if g.kind != "tabular"}
    tabular = any(g.tabular for g in used)
    lines = ["model:"]
    if _named(used):
        lines.append("  features:                         # one encoder per column (mbm-keras zoo lists them)")
        lines += [f"    {_identifier(column)}: [{modality}, {_starter(modality)}]" for column, modality in files.items()]
        if tabular:
            lines.append(f"    tabular: [tabular, {_starter('tabular')}]")
    else:
        for modality in list_modalities():
            if modality in files.values() or (modality == "tabular" and tabular):
                others = [e for e in list_encoders(modality) if e != _starter(modality)]
                lines.append(f"  {modality}: {_starter(modality)}".ljust(36)
                             + (f"# or {', '.join(others)}" if others else "# mbm-keras zoo lists the encoders"))
                if get_modality(modality).WEIGHTS_ARGUMENT:
                    lines.append("  # weights: imagenet                # with a pretrained backbone (resnet50, ...)")
    if len(files) + tabular > 1:
        lines.append("  fusion: concat".ljust(36) + f"# or {', '.join(f for f in list_fusions() if f != 'concat')}")
    return lines + ["  dropout: 0.2"]


def _write_checked(text, out, base):
    """Writes the config through a temporary file that must load first (a config that does not is a bug here)."""
    from mbm_keras.training.config import ConfigError, load_config

    os.makedirs(base, exist_ok=True)
    tmp = os.path.join(base, f".{os.path.basename(out)}.tmp.yaml")  # checked before it replaces anything
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        load_config(tmp)
    except ConfigError as e:  # a bug here, not the user's: say so
        os.remove(tmp)
        raise RuntimeError(f"mbm-keras init wrote a config that does not load ({e}); please report it") from e
    os.replace(tmp, out)


def _starter(modality):
    from mbm_keras.modalities import get_modality
    from mbm_keras.encoders.base import list_encoders

    starter = get_modality(modality).STARTER
    return starter if starter in list_encoders(modality) else list_encoders(modality)[0]
