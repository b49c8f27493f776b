"""Evaluating a trained run on a manifest: loss, metrics, per-class precision and
recall, and the confusion matrix."""

import os

import numpy as np

from mbm_keras.export import write_json


def load_run(run_dir):
    """`(model, preprocessor)` of a run folder written by `train()`."""
    import keras

    from mbm_keras.data import Preprocessor

    path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model.keras in {os.path.abspath(run_dir)} (expected a run folder written by mbm-keras train)")
    return keras.models.load_model(path), Preprocessor.load(run_dir)


def classification_report(labels, probabilities, classes):
    """Per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted)."""
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


def evaluate(run_dir, manifest, batch_size=32, out=None, on_error="raise"):
    """Evaluates the run in `run_dir` on `manifest` and writes the results as JSON.

    Args:
        run_dir: a folder written by `train()` (model.keras + preprocessor.json).
        manifest: CSV / JSON Lines / Parquet with the training columns.
        batch_size: evaluation batch size.
        out: JSON path (default: `<run_dir>/eval-<manifest name>.json`).
        on_error: as in `make_dataset`.

    Returns:
        dict with `loss`, the model's metrics, and for single-label runs
        `per_class` and `confusion_matrix`; `path` is where the JSON went.

    Example:
        >>> results = evaluate("runs/first", "data/test.csv")
        >>> results["per_class"]["cat"]["recall"]
    """
    from mbm_keras.data import make_dataset

    model, pre = load_run(run_dir)
    masks = any(name.endswith("_mask") for name in model.input)
    # Three passes below (metrics, labels, predictions): decode each file once.
    ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size, missing_modalities=masks, on_error=on_error,
                      cache="memory")
    results = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
    results["examples"] = ds.report["kept"]
    results["skipped"] = ds.report["skipped"]
    if pre.labels is not None and pre.labels.label_type == "single":
        labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
        probabilities = model.predict(ds, verbose=0)
        results.update(classification_report(labels, probabilities, pre.labels.classes))
    name = os.path.splitext(os.path.basename(os.fspath(manifest)))[0]
    out = out or os.path.join(run_dir, f"eval-{name}.json")
    write_json(out, {**results, "manifest": os.path.abspath(os.fspath(manifest))})
    results["path"] = out
    return results


def format_report(results):
    """The text `mbm-keras evaluate` prints."""
    lines = [f"examples: {results['examples']} (skipped {results['skipped']})"]
    lines += [f"{k}: {v:.4f}" for k, v in results.items() if isinstance(v, float)]
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
    lines.append(f"\nwritten to {results['path']}")
    return "\n".join(lines)
