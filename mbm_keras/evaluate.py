"""Evaluating a trained run on a manifest: loss, metrics, per-class precision and
recall, and the confusion matrix."""

import os

from mbm_keras.io import write_json
from mbm_keras.tasks.reports import (  # noqa: F401  (public here since the first release)
    NOISE_LEVELS,
    classification_report,
    modality_breakdown,
    plot_robustness,
    robustness_report,
)


def load_run(run_dir):
    """`(model, preprocessor)` of a run folder written by `train()`.

    Args:
        run_dir: the run folder (model.keras + preprocessor.json).

    Examples:
        >>> model, pre = load_run("runs/first")
    """
    from mbm_keras.tasks import load_run as load

    model, pre, _ = load(run_dir)
    return model, pre


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

    Examples:
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
    from mbm_keras.tasks import load_run as load

    model, pre, task = load(run_dir)
    return _written(task, run_dir, model, pre, manifest, out, batch_size=batch_size, on_error=on_error,
                    allow_outside_root=allow_outside_root, robustness=robustness, beam=beam)


def run_choice(run_dir):
    """What the run kept and why, from its `summary.json`: the model (the
    fusion or a single model, `train.keep_best_of`), the epoch and the
    validation data it was chosen on; None for a run without a summary.

    Args:
        run_dir: the run folder (or a `.keras` file in it).

    Examples:
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

    Examples:
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


def format_report(results):
    """The text `mbm-keras evaluate` prints.

    Args:
        results: the dict `evaluate()` returns.

    Examples:
        >>> print(format_report(evaluate("runs/first", "data/test.csv")))
    """
    from mbm_keras.tasks import get_task

    lines = [f"examples: {results['examples']} (skipped {results['skipped']})"]
    lines += [f"{k}: {v:.4f}" for k, v in results.items() if isinstance(v, float)]
    lines += get_task(results.get("task", "classification")).report_lines(results)
    choice = format_choice(results.get("run"))
    if choice:
        lines += [""] + choice
    lines.append(f"\nwritten to {results['path']}")
    return "\n".join(lines)




def evaluate_retrieval(run_dir, model, pre, manifest, batch_size=32, out=None, on_error="raise",
                       allow_outside_root=False):
    """`evaluate` of a retrieval run's model: each row's query among every
    row's candidate (recall@k, MRR, with labels mAP), and the recall@k plot.
    `evaluate()` asks the run's task (`tasks/retrieval.py`); this stays for callers of the first releases.

    Args:
        run_dir: the run folder.
        model, pre: its model and preprocessor (`load_run(run_dir)`).
        manifest: paired rows with both towers' columns (and the labels).
        batch_size, out, on_error, allow_outside_root: as in `evaluate`.

    Examples:
        >>> evaluate_retrieval("runs/search", *load_run("runs/search"), "test.csv")["mrr"]
    """
    from mbm_keras.tasks import get_task

    return _written(get_task("retrieval"), run_dir, model, pre, manifest, out, batch_size=batch_size,
                    on_error=on_error, allow_outside_root=allow_outside_root)


def evaluate_transcription(run_dir, model, pre, manifest, batch_size=32, out=None, on_error="raise",
                           allow_outside_root=False, beam=None):
    """`evaluate` of a transcription run's model: WER, CER, exact share, the
    worst rows. `evaluate()` asks the run's task (`tasks/transcription.py`);
    this stays for callers of the first releases.

    Args:
        run_dir: the run folder.
        model, pre: its model and preprocessor (`load_run(run_dir)`).
        manifest: rows with the audio, the transcript and (if the model has one) the context.
        batch_size, out, on_error, allow_outside_root: as in `evaluate`.
        beam: beam-search width (None: greedy).

    Examples:
        >>> evaluate_transcription("runs/digits", *load_run("runs/digits"), "test.csv")["wer"]
    """
    from mbm_keras.tasks import get_task

    return _written(get_task("transcription"), run_dir, model, pre, manifest, out, batch_size=batch_size,
                    on_error=on_error, allow_outside_root=allow_outside_root, beam=beam)


def transcription_inputs(model, pre):
    """`(audio feature, context feature or None)` of a transcription model, by its inputs.

    Args:
        model: the transcription model.
        pre: its preprocessor (each input's modality).

    Examples:
        >>> transcription_inputs(*load_run("runs/transcription"))   # ("audio", "text")
    """
    from mbm_keras.transcription.model import transcription_roles

    return transcription_roles(model, pre)


def _written(task, run_dir, model, pre, manifest, out, **options):
    """The task's evaluation of `model` on `manifest`, with what the run kept, written to `out` (default:
    `<run_dir>/eval-<manifest name>.json`)."""
    from mbm_keras.tasks.base import default_out

    out = out or default_out(run_dir, manifest)
    results = task.evaluate(run_dir, model, pre, manifest, out, **options)
    results["run"] = run_choice(run_dir)
    write_json(out, {**results, "manifest": os.path.abspath(os.fspath(manifest))})
    results["path"] = out
    return results
