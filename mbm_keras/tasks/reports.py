"""Reports of a trained classifier: per-class precision and recall with the
confusion matrix, each modality's score beside the fusion's, and how the
accuracy depends on each modality (ablation, noise, reliance). `evaluate`
writes them; they also work on any model and dataset."""

import os

import numpy as np

from mbm_keras.io import write_json
from mbm_keras.tasks.base import has_masks


def classification_report(labels, probabilities, classes):
    """Per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted).

    Args:
        labels: integer class ids `(n,)`.
        probabilities: `(n, num_classes)` model outputs.
        classes: the class names, in column order.

    Returns:
        dict with `accuracy`, `per_class` (name -> precision, recall, f1,
        support) and `confusion_matrix` (a list of rows).

    Examples:
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

    Examples:
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
        masks = has_masks(model)
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
    if has_masks(model):
        features = [f for names in groups.values() for f in names]
        for modality, names in groups.items():
            out["masked"][modality] = score(model, mask_others(ds, names, features))
    out["gain"], out["best_single"] = gain(out["fusion"], out["singles"] or out["masked"], better)
    return out


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

    Examples:
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

    Examples:
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
