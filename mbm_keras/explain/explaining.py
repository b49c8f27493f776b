"""`explain()`: rows of a manifest explained by a run, written as one HTML report per row, PNG panels and a
summary page (`mbm-keras explain`)."""

import json
import os
import sys

import numpy as np

from mbm_keras.explain import report
from mbm_keras.explain.gradients import integrated_gradients
from mbm_keras.explain.shapley import modality_shapley

DEFAULT_ROWS = 8


def explain(run, data, rows=None, out=None, steps=32, tolerance=0.01, smoothgrad=0, image_baseline="black",
            progress=True):
    """Explains rows of `data` with the classification (or regression) run `run`.

    For each row: the modality Shapley values (`modality_shapley`) and the integrated gradients of every input
    (`integrated_gradients`), drawn as panels, in `OUT/row-N.html` (self-contained) with the panels as PNGs in
    `OUT/row-N/`; `OUT/index.html` summarizes the rows and averages the Shapley values per predicted class;
    `OUT/explanation.json` holds the numbers.

    Args:
        run: a run folder (or its `model.keras`).
        data: a manifest of the run's columns (the label column is optional).
        rows: the rows to explain, 0-based positions in the manifest (default: the first 8).
        out: the report folder (default: `<run>/explain-<manifest name>`).
        steps: integrated gradients' first step count (doubled until complete within `tolerance`).
        smoothgrad: average over this many noisy copies (0: plain integrated gradients).
        image_baseline: "black" or "blur".
        progress: a line per row on stderr.

    Returns:
        The summary written to `explanation.json` (with `"out"`, the report folder).

    Examples:
        >>> explain("runs/first", "data/demo/test.csv", rows=[0, 5, 9], out="report")
    """
    from mbm_keras.data import make_dataset, read_manifest
    from mbm_keras.tasks import load_run
    from mbm_keras.tasks.base import has_masks

    model, pre, task = load_run(run)
    if task.name != "classification":
        raise ValueError(f"{run} is a {task.name} model; mbm-keras explain explains classification and regression "
                         f"runs (retrieval and transcription explanations are not built yet)")
    manifest = read_manifest(data)
    rows = list(range(min(DEFAULT_ROWS, len(manifest)))) if rows is None else list(rows)
    bad = [r for r in rows if not 0 <= r < len(manifest)]
    if bad:
        raise ValueError(f"row {bad[0]} is not in {manifest.path}: it has rows 0 to {len(manifest) - 1}")
    if not rows:
        raise ValueError("rows is empty: give at least one row to explain")
    out = out or os.path.join(os.path.abspath(run) if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)),
                              "explain-" + os.path.splitext(os.path.basename(manifest.path))[0])
    chosen = manifest.subset(rows)
    if pre.labels is not None and pre.columns.get("label") not in chosen.columns:
        pre = pre.without_labels()
    batch = _first_batch(make_dataset(chosen, preprocessor=pre, batch_size=len(rows),
                                      missing_modalities=has_masks(model), verbose=False))
    x, y = batch if isinstance(batch, tuple) else (batch, None)
    os.makedirs(out, exist_ok=True)  # once the rows decode: a bad row leaves no empty report folder
    x = {k: np.asarray(v) for k, v in x.items()}
    classes = [str(c) for c in pre.labels.classes] if pre.labels is not None and pre.labels.classes else None
    shapley = modality_shapley(model, x)
    baselines = {f: image_baseline for f, m in pre.feature_modalities.items() if m == "image"}
    explained = []
    for i, row in enumerate(rows):
        if progress:
            print(f"explain: row {row} ({i + 1} of {len(rows)})", file=sys.stderr, flush=True)
        example = {k: v[i:i + 1] for k, v in x.items()}
        attributions = integrated_gradients(model, example, target=int(shapley.targets[i]), baselines=baselines,
                                            steps=steps, tolerance=tolerance, smoothgrad=smoothgrad)
        truth = None if y is None or classes is None else classes[int(np.asarray(y)[i])]
        explained.append(_write_row(out, row, model, pre, classes, shapley, i, attributions, truth, example))
    summary = _summary(run, manifest, shapley, explained)
    report.write_page(os.path.join(out, "index.html"), _index_page(summary, out))
    with open(os.path.join(out, "explanation.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return {**summary, "out": out}


def _first_batch(dataset):
    """The dataset's one batch; a row that cannot be decoded is a DataError naming it (not a traceback)."""
    import tensorflow as tf

    from mbm_keras.codecs.asserts import explain as reason
    from mbm_keras.data.manifest import DataError

    try:
        return next(iter(dataset))
    except tf.errors.InvalidArgumentError as e:
        raise DataError(reason(e)) from None


def _answer_name(classes, target):
    return classes[target] if classes else "the output"


def _write_row(out, row, model, pre, classes, shapley, i, attributions, truth, example):
    """The row's panels and page; returns its numbers."""
    folder = os.path.join(out, f"row-{row}")
    os.makedirs(folder, exist_ok=True)
    target = int(shapley.targets[i])
    answer = _answer_name(classes, target)
    sections = []
    png = report.shapley_panel(shapley.features, shapley.values[i], os.path.join(folder, "modalities.png"),
                               f"each modality's share of P({answer}) = {shapley.full[i]:.3f}")
    sections.append(("Modalities (Shapley values)", report.inline(png, "modality Shapley values") + _shapley_note(
        shapley, i)))
    for feature, values in attributions.features.items():
        modality = pre.feature_modalities[feature]
        title = f"{feature}: attribution to P({answer}), total {float(np.sum(values)):+.4f}"
        path = os.path.join(folder, f"{feature}.png")
        point = attributions.points[feature]
        if modality == "image":
            content = report.inline(report.image_panel(point, values, path, title), f"{feature} heat map")
        elif modality == "text":
            words, kept = _words(pre.features[feature], example[feature][0])
            content = f"<p>{report.words_html(words, values[kept])}</p>"
        elif modality == "audio" and values.ndim == 2:
            content = report.inline(report.audio_panel(point, values, _seconds_per_frame(model, feature), path, title),
                                    f"{feature} attribution over time")
        elif modality == "tabular":
            names, grouped = _cells(pre.features[feature], values)
            content = report.inline(report.cells_panel(names, grouped, path, title), f"{feature} cells")
        else:
            series = point if point.ndim == 2 else point[:, None]
            content = report.inline(report.series_panel(series, values.reshape(series.shape), path, title),
                                    f"{feature} attribution")
        sections.append((f"{feature} ({modality})", content))
    title = f"Row {row}: {answer} ({shapley.full[i]:.3f})" + (f", labelled {truth}" if truth is not None else "")
    note = (f'<p class="note">Integrated gradients: {attributions.steps} steps, completeness error '
            f'{100 * attributions.error:.2f}% (the attributions sum to f(x) - f(baseline) = '
            f'{attributions.output - attributions.baseline_output:+.4f}).</p>')
    report.write_page(os.path.join(out, f"row-{row}.html"), report.page(title, note, sections))
    return {"row": row, "answer": answer, "probability": float(shapley.full[i]), "label": truth,
            "shapley": dict(zip(shapley.features, map(float, shapley.values[i]))),
            "attribution_totals": attributions.totals(), "steps": attributions.steps,
            "completeness_error": attributions.error}


def _shapley_note(shapley, i):
    how = ("each modality left out as the model learned to go without it (its mask)" if shapley.baseline == "masks"
           else "each modality replaced by a zero input (the model has no masks: a blank input it may never have "
                "seen)")
    return (f'<p class="note">Shapley values over every subset of modalities, {how}: they sum to '
            f'{shapley.full[i]:.3f} - {shapley.empty[i]:.3f} (the answer with every modality left out).</p>')


def _words(feature, ids):
    """`(tokens, their positions)` of a text's ids: the tokenizer's vocabulary, padding left out."""
    vocabulary = feature.tokenizer.vocabulary or []
    kept = [j for j, token in enumerate(ids) if token != 0]
    return [str(vocabulary[ids[j]]) if ids[j] < len(vocabulary) else f"#{ids[j]}" for j in kept], kept


def _seconds_per_frame(model, feature):
    try:
        layer = model.get_layer(f"{feature}_encoder").get_layer("log_mel")
        return float(layer.sequence_stride) / float(layer.sampling_rate)
    except (ValueError, AttributeError):
        return 1.0


def _cells(feature, values):
    """`(column names, attribution per column)`: a categorical column's one-hot slots summed."""
    encoder = feature.encoder
    names, grouped, at = list(encoder.numeric), list(values[:len(encoder.numeric)]), len(encoder.numeric)
    for column in encoder.categorical:
        width = len(encoder.categories[column]) + 1
        names.append(column)
        grouped.append(float(np.sum(values[at:at + width])))
        at += width
    return names, np.asarray(grouped, float)


def _summary(run, manifest, shapley, explained):
    answers = [e["answer"] for e in explained]
    return {"run": os.path.abspath(run), "data": manifest.path, "features": shapley.features,
            "baseline": shapley.baseline, "exact": shapley.exact, "rows": explained,
            "mean_shapley": shapley.mean(), "mean_shapley_by_answer": shapley.mean(by=answers)}


def _index_page(summary, out):
    features = summary["features"]
    head = "".join(f"<th>{f}</th>" for f in features)
    lines = []
    for e in summary["rows"]:
        cells = "".join(f"<td>{e['shapley'][f]:+.3f}</td>" for f in features)
        lines.append(f'<tr><td><a href="row-{e["row"]}.html">row {e["row"]}</a></td><td>{e["answer"]}</td>'
                     f'<td>{e["probability"]:.3f}</td><td>{e["label"] or ""}</td>{cells}</tr>')
    mean = summary["mean_shapley"]
    png = report.shapley_panel(features, [mean[f] for f in features], os.path.join(out, "modalities.png"),
                               f"mean Shapley values over {len(summary['rows'])} rows")
    by = "".join(f"<tr><td>{a}</td>" + "".join(f"<td>{v[f]:+.3f}</td>" for f in features) + "</tr>"
                 for a, v in summary["mean_shapley_by_answer"].items())
    sections = [("Each modality's share, averaged", report.inline(png, "mean Shapley values")),
                ("By predicted class", f"<table><tr><th>answer</th>{head}</tr>{by}</table>"),
                ("Rows", f"<table><tr><th>row</th><th>answer</th><th>probability</th><th>label</th>{head}</tr>"
                         + "".join(lines) + "</table>")]
    return report.page(f"Explanations of {os.path.basename(summary['run'])} on {os.path.basename(summary['data'])}",
                       "", sections)
