"""Evaluating a trained run on a manifest: loss, metrics, per-class precision and
recall, and the confusion matrix."""

import os

import numpy as np

from mbm_keras.io import write_json


def load_run(run_dir):
    """`(model, preprocessor)` of a run folder written by `train()`.

    Args:
        run_dir: the run folder (model.keras + preprocessor.json).

    Example:
        >>> model, pre = load_run("runs/first")
    """
    from mbm_keras.run import Run

    return Run(run_dir).load()


def classification_report(labels, probabilities, classes):
    """Per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted).

    Args:
        labels: integer class ids `(n,)`.
        probabilities: `(n, num_classes)` model outputs.
        classes: the class names, in column order.

    Returns:
        dict with `accuracy`, `per_class` (name -> precision, recall, f1,
        support) and `confusion_matrix` (a list of rows).

    Example:
        >>> classification_report([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["cat", "dog"])["accuracy"]
        0.6666666666666666
    """
    labels = np.asarray(labels).reshape(-1)
    predicted = np.argmax(probabilities, axis=-1)
    k = len(classes)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(classes):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(confusion[i].sum())}
    return {"accuracy": float(np.trace(confusion) / max(1, confusion.sum())), "per_class": per_class, "confusion_matrix": confusion.tolist()}


def evaluate(run_dir, manifest, batch_size=32, out=None, on_error="raise", robustness=False, allow_outside_root=False,
             beam=None):
    """Evaluates the run in `run_dir` on `manifest` and writes the results as JSON.

    Args:
        run_dir: a folder written by `train()` (model.keras + preprocessor.json).
        manifest: CSV / JSON Lines / Parquet with the training columns.
        batch_size: evaluation batch size.
        out: JSON path (default: `<run_dir>/eval-<manifest name>.json`).
        on_error: as in `make_dataset`.
        robustness: also run `robustness_report` (single-label runs) and write
            `<out without .json>-robustness.json` / `.png`.
        allow_outside_root: accept file paths outside the manifest's folder.
        beam: transcription runs: beam-search width (None: greedy decoding).

    Returns:
        dict with `loss`, the model's metrics, and for single-label runs
        `per_class` and `confusion_matrix`; `path` is where the JSON went.

    Example:
        >>> results = evaluate("runs/first", "data/test.csv")
        >>> results["per_class"]["cat"]["recall"]
    """
    import warnings

    with warnings.catch_warnings():
        # With on_error="skip" a pass has no known length (a failed row is not replaced), and Keras warns at
        # the end of every such pass that the input "ran out of data": the end of the rows, nothing wrong.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        return _evaluate(run_dir, manifest, batch_size, out, on_error, robustness, allow_outside_root, beam)


def _evaluate(run_dir, manifest, batch_size, out, on_error, robustness, allow_outside_root, beam):
    from mbm_keras.data import make_dataset

    model, pre = load_run(run_dir)
    masks = any(name.endswith("_mask") for name in model.input)
    if "query_tower" in [layer.name for layer in model.layers]:
        return evaluate_retrieval(run_dir, model, pre, manifest, batch_size, out, on_error, allow_outside_root)
    if pre.labels is not None and pre.labels.label_type == "transcript":
        return evaluate_transcription(run_dir, model, pre, manifest, batch_size, out, on_error, allow_outside_root,
                                      beam=beam)
    # Three passes below (metrics, labels, predictions): decode each file once.
    ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size, missing_modalities=masks, on_error=on_error,
                      cache="memory", allow_outside_root=allow_outside_root)
    results = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
    results["examples"] = ds.report["kept"]
    results["skipped"] = ds.report["skipped"]
    if pre.labels is not None and pre.labels.label_type == "single":
        labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
        probabilities = model.predict(ds, verbose=0)
        results.update(classification_report(labels, probabilities, pre.labels.classes))
    breakdown = modality_breakdown(run_dir, manifest, model, pre, ds, batch_size=batch_size, on_error=on_error,
                                   allow_outside_root=allow_outside_root)
    if breakdown is not None:
        results["modalities"] = breakdown
    results["run"] = run_choice(run_dir)
    name = os.path.splitext(os.path.basename(os.fspath(manifest)))[0]
    out = out or os.path.join(run_dir, f"eval-{name}.json")
    if robustness:
        if pre.labels is None or pre.labels.label_type != "single":
            raise ValueError("--robustness covers single-label classification runs")
        prefix = os.path.splitext(out)[0] + "-robustness"
        results["robustness"] = robustness_report(model, ds, out=prefix, preprocessor=pre)
        results["robustness_files"] = [f"{prefix}.json", f"{prefix}.png"]
    write_json(out, {**results, "manifest": os.path.abspath(os.fspath(manifest))})
    results["path"] = out
    return results


def run_choice(run_dir):
    """What the run kept and why, from its `summary.json`: the model (the
    fusion or a single model, `train.keep_best_of`), the epoch and the
    validation data it was chosen on; None for a run without a summary.

    Args:
        run_dir: the run folder (or a `.keras` file in it).

    Example:
        >>> run_choice("runs/first")["kept"]
        'the audio model alone: the fusion's gain (+0.0100 accuracy) is within ...'
    """
    import json

    from mbm_keras.run import Run

    path = os.path.join(Run(run_dir).folder, "summary.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    validation = summary.get("validation") or {}
    return {"kept": summary.get("kept"), "epoch": summary.get("epoch"),
            "validation": validation.get("why") or validation.get("source"), "gain": summary.get("gain"),
            "margin": summary.get("margin")}


def format_choice(choice):
    """The lines `mbm-keras evaluate` prints about what the run kept.

    Args:
        choice: what `run_choice` returns (None: no lines).

    Example:
        >>> print("\n".join(format_choice(run_choice("runs/first"))))
    """
    if not choice:
        return []
    lines = []
    if choice.get("kept") == "fusion" and choice.get("gain") is not None and choice.get("margin") is not None:
        lines.append(f"the run kept: the fusion ({choice['gain']:+.4f} over the best single model on validation, "
                     f"beyond the noise of {choice['margin']:.4f})")
    elif choice.get("kept"):
        lines.append(f"the run kept: {choice['kept']}")
    epoch = choice.get("epoch")
    if epoch:
        lines.append(f"its epoch{' (' + epoch['model'] + ')' if epoch.get('model') else ''}: {epoch['kept']} of "
                     f"{epoch['of']}, {epoch['why']}")
    if choice.get("validation"):
        lines.append(f"chosen on: {choice['validation']}")
    return lines


def modality_breakdown(run_dir, manifest, model, pre, ds, **data_options):
    """Each modality's own score on `manifest` next to the fusion's: the run's
    single models (`singles/<modality>/`, trained by `train.balance:
    unimodal` or `train.keep_best_of: all`) and, when the fusion has
    modality masks, the fusion with the other modalities masked out. None for
    a model of one modality.

    Args:
        run_dir: the run folder (or a `.keras` file in it).
        manifest: the manifest `ds` was made from.
        model, pre: the run's model and preprocessor.
        ds: `make_dataset(manifest, preprocessor=pre, ...)` batches.
        **data_options: `make_dataset` options for the fusion's data when the
            run kept a single model (the fusion is then in `fusion/`).

    Returns:
        dict like the run's `summary.json` (`metric`, `fusion`, `singles`,
        `masked`, `gain`, `best_single`, `modalities`), or None.

    Example:
        >>> model, pre = load_run("runs/first")
        >>> ds = make_dataset("test.csv", preprocessor=pre, missing_modalities=True)
        >>> modality_breakdown("runs/first", "test.csv", model, pre, ds)["singles"]
        {'image': 0.61, 'audio': 0.47}
    """
    from mbm_keras.data import make_dataset
    from mbm_keras.heads import get_head
    from mbm_keras.run import Run
    from mbm_keras.training.balance import FUSION, SINGLES, gain, mask_others, modality_groups, score_metric, select_inputs

    run_dir = Run(run_dir).folder  # a .keras file names its run folder
    fusion_dir = os.path.join(run_dir, FUSION)
    if os.path.isfile(os.path.join(fusion_dir, "model.keras")):  # the run kept a single model; the fusion is here
        model, pre = Run(fusion_dir).load()
        masks = any(name.endswith("_mask") for name in model.input)
        ds = make_dataset(manifest, preprocessor=pre, missing_modalities=masks, cache="memory", **data_options)
    groups = modality_groups(pre.feature_modalities)
    if len(groups) < 2:
        return None
    metric, better = score_metric(get_head(pre.labels.head if pre.labels is not None else "softmax"))

    def score(m, dataset):
        return float(m.evaluate(dataset, verbose=0, return_dict=True)[metric])

    out = {"where": os.path.basename(os.fspath(manifest)), "metric": metric, "better": better, "modalities": list(groups),
           "fusion": score(model, ds), "singles": {}, "masked": {}}
    for modality in groups:
        folder = os.path.join(run_dir, SINGLES, modality)
        if os.path.isfile(os.path.join(folder, "model.keras")):
            # Its preprocessing is a subset of the fusion's (and its masks too): the fusion's batches serve it.
            single, _ = Run(folder).load()
            out["singles"][modality] = score(single, select_inputs(ds, list(single.input)))
    if any(name.endswith("_mask") for name in model.input):
        features = [f for names in groups.values() for f in names]
        for modality, names in groups.items():
            out["masked"][modality] = score(model, mask_others(ds, names, features))
    out["gain"], out["best_single"] = gain(out["fusion"], out["singles"] or out["masked"], better)
    return out


def evaluate_retrieval(run_dir, model, pre, manifest, batch_size=32, out=None, on_error="raise",
                       allow_outside_root=False):
    """`evaluate` for a retrieval run: each row's query among every row's
    candidate of `manifest` (paired rows): recall@1/5/10 and MRR, with labels
    class-level mAP and precision@k too, the recall@k curve in the JSON and
    as a plot (`<out without .json>-recall.png`).

    Args:
        run_dir: the run folder.
        model, pre: its model and preprocessor (`load_run(run_dir)`).
        manifest: paired rows with both towers' columns (and the labels).
        batch_size, out, on_error, allow_outside_root: as in `evaluate`.

    Example:
        >>> evaluate("runs/search", "test.csv")["map"]   # evaluate() calls it for retrieval runs
    """
    from mbm_keras.data import make_dataset
    from mbm_keras.retrieval import retrieval_metrics
    from mbm_keras.training.retrieval_task import embed_pairs

    masks = any(name.endswith("_mask") for name in model.input)
    ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size, missing_modalities=masks, on_error=on_error,
                      allow_outside_root=allow_outside_root)
    queries, candidates, labels = embed_pairs(model, ds)
    results = {"task": "retrieval", "examples": int(len(queries)), "skipped": ds.report["skipped"]}
    results.update(retrieval_metrics(queries, candidates, labels, labels))
    ks = sorted({k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k <= len(candidates)} | {len(candidates)})
    curve = retrieval_metrics(queries, candidates, ks=ks)
    results["recall_at_k"] = {str(k): curve[f"recall@{k}"] for k in ks}
    results["run"] = run_choice(run_dir)
    name = os.path.splitext(os.path.basename(os.fspath(manifest)))[0]
    out = out or os.path.join(run_dir, f"eval-{name}.json")
    plot = os.path.splitext(out)[0] + "-recall.png"
    _plot_recall(results["recall_at_k"], plot, f"{os.path.basename(os.path.abspath(run_dir))} on {name}")
    results["recall_plot"] = plot
    write_json(out, {**results, "manifest": os.path.abspath(os.fspath(manifest))})
    results["path"] = out
    return results


def transcription_inputs(model, pre):
    """`(audio feature, context feature or None)` of a transcription model, by its inputs.

    Args:
        model: the transcription model.
        pre: its preprocessor (each input's modality).

    Example:
        >>> transcription_inputs(*load_run("runs/transcription"))   # ("audio", "text")
    """
    names = list(model.input) if isinstance(model.input, dict) else [t.name for t in model.inputs]
    audio = next(n for n in names if pre.feature_modalities.get(n) == "audio")
    context = next((n for n in names if pre.feature_modalities.get(n) == "text"), None)
    return audio, context


def evaluate_transcription(run_dir, model, pre, manifest, batch_size=32, out=None, on_error="raise",
                           allow_outside_root=False, beam=None):
    """`evaluate` for a transcription run: WER, CER, the share of exact
    transcripts, the worst examples (reference and hypothesis), and how many
    transcript characters were outside the training vocabulary (each scored as
    an error, never a crash).

    Args:
        run_dir: the run folder.
        model, pre: its model and preprocessor (`load_run(run_dir)`).
        manifest: rows with the audio, the transcript and (if the model has one) the context.
        batch_size, out, on_error, allow_outside_root: as in `evaluate`.
        beam: beam-search width (None: greedy).

    Example:
        >>> evaluate("runs/digits", "test.csv")["wer"]   # evaluate() calls it for transcription runs
    """
    from mbm_keras.data import make_dataset
    from mbm_keras.training.transcription_task import scores, select_inputs, transcribe_batches, warn_long_contexts

    audio, context = transcription_inputs(model, pre)
    pre.labels.max_frames = int(model.output.shape[1])
    before = pre.labels.unknown_count
    ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size, missing_modalities=[context] if context else False,
                      on_error=on_error, allow_outside_root=allow_outside_root)
    ds = select_inputs(ds, [n for n in (audio, context) if n])
    long_contexts = warn_long_contexts(manifest, pre, context)
    refs, hyps = transcribe_batches(model, ds, pre.labels.vocabulary, beam)
    results = {"task": "transcription", "examples": ds.report["kept"], "skipped": ds.report["skipped"],
               "decoding": f"beam {beam}" if beam else "greedy",
               "unknown_characters": pre.labels.unknown_count - before, "long_contexts": long_contexts}
    results.update(scores(refs, hyps, worst=10))
    results["run"] = run_choice(run_dir)
    name = os.path.splitext(os.path.basename(os.fspath(manifest)))[0]
    out = out or os.path.join(run_dir, f"eval-{name}.json")
    write_json(out, {**results, "manifest": os.path.abspath(os.fspath(manifest))})
    results["path"] = out
    return results


def _plot_recall(curve, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([int(k) for k in curve], list(curve.values()), marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k (own candidate in the top k)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def format_report(results):
    """The text `mbm-keras evaluate` prints.

    Args:
        results: the dict `evaluate()` returns.

    Example:
        >>> print(format_report(evaluate("runs/first", "data/test.csv")))
    """
    lines = [f"examples: {results['examples']} (skipped {results['skipped']})"]
    lines += [f"{k}: {v:.4f}" for k, v in results.items() if isinstance(v, float)]
    if "recall_plot" in results:
        lines.append(f"recall@k plot: {results['recall_plot']}")
    if results.get("task") == "transcription":
        lines.append(f"decoding: {results['decoding']}; characters outside the vocabulary: "
                     f"{results['unknown_characters']} (each an error)")
        for w in results["worst"]:
            lines.append(f"CER {w['cer']:.2f}  reference: {w['reference']!r}\n           hypothesis: {w['hypothesis']!r}")
    if "per_class" in results:
        lines.append(f"\n{'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for name, m in results["per_class"].items():
            lines.append(f"{name:<20}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9}")
        classes = list(results["per_class"])
        width = max(6, max(len(c) for c in classes) + 1)
        lines.append("\nconfusion matrix (rows: true, columns: predicted)")
        lines.append(" " * width + "".join(f"{c[:width - 1]:>{width}}" for c in classes))
        for name, row in zip(classes, results["confusion_matrix"]):
            lines.append(f"{name[:width - 1]:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    if "modalities" in results:
        from mbm_keras.training.balance import format_summary

        lines.append("")
        lines += format_summary(results["modalities"])
    if "robustness" in results:
        r = results["robustness"]
        lines.append(f"\n{'modality':<12}{'removed':>9}{'reliance':>10}   accuracy at noise " + " ".join(map(str, r["noise_levels"])))
        for m in r["ablation"]:
            noise = " ".join(f"{r['noise'][m][str(v)]:.3f}" for v in r["noise_levels"])
            lines.append(f"{m:<12}{r['ablation'][m]:>9.3f}{r['reliance'][m]:>10.2f}   {noise}")
        lines.append("robustness report: " + ", ".join(results["robustness_files"]))
    choice = format_choice(results.get("run"))
    if choice:
        lines += [""] + choice
    lines.append(f"\nwritten to {results['path']}")
    return "\n".join(lines)


NOISE_LEVELS = (0.1, 0.3, 0.6, 1.0)


def _perturb(x, feature, modality, level, rng, options=None):
    """A copy of input `x[feature]` with noise of strength `level` (0..1), as
    its modality defines it (`Modality.perturb`: image pixel noise, audio noise
    relative to the clip's RMS, unknown-token replacement for text, Gaussian
    noise on standardized tabular and timeseries values); `options` from the
    feature's `perturb_options()`."""
    from mbm_keras.modalities import get_modality

    return get_modality(modality).perturb(x[feature], level, rng, **(options or {}))


def robustness_report(model, dataset, noise_levels=NOISE_LEVELS, seed=0, out=None, modalities=None,
                      preprocessor=None):
    """How a classifier's accuracy depends on each modality.

    - ablation: each modality removed in turn (its `<m>_mask` set to 0 when the
      model has masks, else its input zeroed);
    - noise: accuracy as each modality alone gets noisier (see `_perturb`);
    - reliance: each modality's accuracy drop when removed, as a share of the
      drops of all modalities (0 = ignored, 1 = the model uses nothing else).

    Args:
        model: a single-label classifier (softmax head) with dict inputs.
        dataset: batches `(inputs, labels)` from `make_dataset` (with masks if
            the model has `<m>_mask` inputs).
        noise_levels: strengths in (0, 1].
        seed: seed of the noise.
        out: a path prefix: writes `<out>.json` and `<out>.png`.
        modalities: `{input: modality}` for inputs not named after their
            modality (`pre.feature_modalities`).
        preprocessor: the run's `Preprocessor`: its features' modalities and
            noise options (a KerasHub preset's own unknown and special ids).

    Returns:
        dict with `accuracy`, `ablation`, `noise`, `reliance` and `examples`.

    Example:
        >>> report = robustness_report(model, make_dataset("test.csv", preprocessor=pre), out="runs/first/robustness")
    """
    batches = list(dataset.as_numpy_iterator())
    if not batches or not isinstance(batches[0], tuple):
        raise ValueError("robustness_report needs a dataset of (inputs, labels) batches, e.g. make_dataset(manifest, preprocessor=pre)")
    x = {k: np.concatenate([b[0][k] for b in batches]) for k in batches[0][0]}
    y = np.concatenate([b[1] for b in batches]).reshape(-1)
    if y.dtype.kind not in "iu":
        raise ValueError(f"robustness_report covers single-label classifiers (integer labels); received labels of dtype {y.dtype}")
    kinds = dict(modalities or (preprocessor.feature_modalities if preprocessor is not None else {}))
    options = {name: f.perturb_options() for name, f in (preprocessor.features.items() if preprocessor else ())}
    modalities = [k for k in x if not k.endswith("_mask")]
    rng = np.random.default_rng(seed)

    def accuracy(inputs):
        return float(np.mean(np.argmax(model.predict(inputs, verbose=0, batch_size=64), -1) == y))

    full = accuracy(x)
    ablation = {}
    for m in modalities:
        removed = dict(x)
        removed[m] = np.zeros_like(x[m])
        if f"{m}_mask" in x:
            removed[f"{m}_mask"] = np.zeros_like(x[f"{m}_mask"])
        ablation[m] = accuracy(removed)
    noise = {m: {str(level): accuracy({**x, m: _perturb(x, m, kinds.get(m, m), level, rng, options.get(m))})
                 for level in noise_levels} for m in modalities}
    drops = {m: max(0.0, full - ablation[m]) for m in modalities}
    total = sum(drops.values())
    reliance = {m: (drops[m] / total if total else 0.0) for m in modalities}
    report = {"examples": int(len(y)), "accuracy": full, "ablation": ablation, "noise": noise, "reliance": reliance,
              "noise_levels": list(noise_levels)}
    if out:
        write_json(f"{out}.json", report)
        plot_robustness(report, f"{out}.png")
    return report


def plot_robustness(report, path):
    """A two-panel PNG of a `robustness_report`: accuracy with each modality
    removed (and its reliance share), and accuracy against noise per modality.

    Args:
        report: the dict `robustness_report()` returns.
        path: the PNG to write.

    Example:
        >>> plot_robustness(robustness_report(model, test), "robustness.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modalities = list(report["ablation"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bars = left.bar(modalities, [report["ablation"][m] for m in modalities], color="tab:orange")
    left.axhline(report["accuracy"], color="tab:blue", linestyle="--", label=f"all modalities ({report['accuracy']:.1%})")
    for bar, m in zip(bars, modalities):
        left.annotate(f"reliance {report['reliance'][m]:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8)
    left.set(title="accuracy with one modality removed", ylabel="accuracy", ylim=(0, 1.05))
    left.legend(loc="lower right", fontsize=8)
    levels = [0.0] + report["noise_levels"]
    for m in modalities:
        right.plot(levels, [report["accuracy"]] + [report["noise"][m][str(v)] for v in report["noise_levels"]],
                   marker="o", label=m)
    right.set(title="accuracy as one modality gets noisier", xlabel="noise level", ylim=(0, 1.05))
    right.legend(fontsize=8)
    fig.suptitle(f"robustness on {report['examples']} examples")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
