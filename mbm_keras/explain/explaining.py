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
    """Explains rows of `data` with the run `run`: a classification (or regression), retrieval or transcription
    run.

    - Classification: for each row, the modality Shapley values (`modality_shapley`) and the integrated
      gradients of every input (`integrated_gradients`) of the predicted class's probability.
    - Retrieval: for each row, the match of its query with its own candidate (`match_model`'s cosine score):
      each feature's Shapley value (both towers'), the query's words and the candidate's regions.
    - Transcription: for each row, each output character of the greedy transcript (`transcript_attributions`):
      the audio frames and context tokens that drove it, and its Shapley values over audio and context.

    Each row is drawn as panels in `OUT/row-N.html` (self-contained) with the panels as PNGs in `OUT/row-N/`;
    `OUT/index.html` summarizes the rows; `OUT/explanation.json` holds the numbers.

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
    from mbm_keras.data import read_manifest
    from mbm_keras.explain import matching, transcripts
    from mbm_keras.tasks import load_run

    model, pre, task = load_run(run)
    explainers = {"classification": _explain_answers, "retrieval": matching.explain_matches,
                  "transcription": transcripts.explain_transcripts}
    if task.name not in explainers:
        raise ValueError(f"{run} is an {task.name} model; mbm-keras explain explains classification, regression, "
                         f"retrieval and transcription runs")
    manifest = read_manifest(data)
    rows = list(range(min(DEFAULT_ROWS, len(manifest)))) if rows is None else list(rows)
    bad = [r for r in rows if not 0 <= r < len(manifest)]
    if bad:
        raise ValueError(f"row {bad[0]} is not in {manifest.path}: it has rows 0 to {len(manifest) - 1}")
    if not rows:
        raise ValueError("rows is empty: give at least one row to explain")
    out = out or os.path.join(os.path.abspath(run) if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)),
                              "explain-" + os.path.splitext(os.path.basename(manifest.path))[0])
    options = {"steps": steps, "tolerance": tolerance, "smoothgrad": smoothgrad, "image_baseline": image_baseline,
               "progress": progress}
    summary = explainers[task.name](run, model, pre, manifest, rows, out, options)
    with open(os.path.join(out, "explanation.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return {**summary, "out": out}


def decoded_rows(dataset, out):
    """`(inputs, labels or None)` of the chosen rows' one batch, as numpy; a row that cannot be decoded is a
    DataError naming it (not a traceback). Makes the report folder `out` once they decode, so a bad row
    leaves no empty folder."""
    batch = _first_batch(dataset)
    batch = batch if isinstance(batch, tuple) else (batch,)
    x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    os.makedirs(out, exist_ok=True)
    return {k: np.asarray(v) for k, v in x.items()}, (None if y is None else np.asarray(y))


def say(options, i, row, rows):
    if options["progress"]:
        print(f"explain: row {row} ({i + 1} of {len(rows)})", file=sys.stderr, flush=True)


def warn_incomplete(options, row, attributions, what=""):
    """A line on stderr when the attributions did not add up within the tolerance at the most steps tried."""
    if attributions.error > options["tolerance"] and not options["smoothgrad"]:  # SmoothGrad's are approximate
        print(f"explain: warning: row {row}{what}: the integrated gradients add up to f(x) - f(baseline) only within "
              f"{100 * attributions.error:.1f}% at {attributions.steps} steps (asked: "
              f"{100 * options['tolerance']:g}%); its attributions are approximate", file=sys.stderr, flush=True)


def _explain_answers(run, model, pre, manifest, rows, out, options):
    """A classification (or regression) run's answers: see `explain`."""
    from mbm_keras.data import make_dataset
    from mbm_keras.tasks.base import has_masks

    chosen = manifest.subset(rows)
    if pre.labels is not None and pre.columns.get("label") not in chosen.columns:
        pre = pre.without_labels()
    x, y = decoded_rows(make_dataset(chosen, preprocessor=pre, batch_size=len(rows),
                                     missing_modalities=has_masks(model), verbose=False), out)
    classes = [str(c) for c in pre.labels.classes] if pre.labels is not None and pre.labels.classes else None
    shapley = modality_shapley(model, x)
    explained = []
    for i, row in enumerate(rows):
        say(options, i, row, rows)
        example = {k: v[i:i + 1] for k, v in x.items()}
        attributions = integrated_gradients(model, example, target=int(shapley.targets[i]),
                                            baselines=image_baselines(pre, options), steps=options["steps"],
                                            tolerance=options["tolerance"], smoothgrad=options["smoothgrad"])
        warn_incomplete(options, row, attributions)
        truth = None if y is None or classes is None else classes[int(y[i])]
        explained.append(_write_row(out, row, model, pre, classes, shapley, i, attributions, truth, example))
    summary = _summary(run, manifest, shapley, explained)
    report.write_page(os.path.join(out, "index.html"), _index_page(summary, out))
    return summary


def image_baselines(pre, options):
    return {f: options["image_baseline"] for f, m in pre.feature_modalities.items() if m == "image"}


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
    png = report.shapley_panel(shapley.features, shapley.values[i], os.path.join(folder, "modalities.png"),
                               f"each modality's share of P({answer}) = {shapley.full[i]:.3f}")
    sections = [("Modalities (Shapley values)", report.inline(png, "modality Shapley values") + _shapley_note(
        shapley, i))]
    sections += feature_sections(model, pre, attributions, example, folder, f"P({answer})")
    title = f"Row {row}: {answer} ({shapley.full[i]:.3f})" + (f", labelled {truth}" if truth is not None else "")
    report.write_page(os.path.join(out, f"row-{row}.html"), report.page(title, completeness_note(attributions),
                                                                        sections))
    return {"row": row, "answer": answer, "probability": float(shapley.full[i]), "label": truth,
            "shapley": dict(zip(shapley.features, map(float, shapley.values[i]))), "empty": float(shapley.empty[i]),
            "attribution_totals": attributions.totals(), "steps": attributions.steps,
            "completeness_error": attributions.error}


def completeness_note(attributions):
    return (f'<p class="note">Integrated gradients: {attributions.steps} steps, completeness error '
            f'{100 * attributions.error:.2f}% (the attributions sum to f(x) - f(baseline) = '
            f'{attributions.output - attributions.baseline_output:+.4f}).</p>')


def feature_sections(model, pre, attributions, example, folder, explained):
    """`[(heading, html)]`: one panel per feature of `attributions`, drawn for its modality (PNGs in `folder`).
    `explained` names the explained output in the titles, e.g. "P(red)"."""
    sections = []
    for feature, values in attributions.features.items():
        modality = pre.feature_modalities[feature]
        title = f"{feature}: attribution to {explained}, total {float(np.sum(values)):+.4f}"
        path = os.path.join(folder, f"{feature}.png")
        point = attributions.points[feature]
        if modality == "image":
            content = report.inline(report.image_panel(point, values, path, title), f"{feature} heat map")
        elif modality == "text":
            words, kept = words_of(pre.features[feature], example[feature][0])
            content = f"<p>{report.words_html(words, values[kept])}</p>"
        elif modality == "audio" and values.ndim == 2:
            content = report.inline(report.audio_panel(point, values, seconds_per_frame(model, feature), path, title),
                                    f"{feature} attribution over time")
        elif modality == "tabular":
            names, grouped = _cells(pre.features[feature], values)
            content = report.inline(report.cells_panel(names, grouped, path, title), f"{feature} cells")
        else:
            series = point if point.ndim == 2 else point[:, None]
            content = report.inline(report.series_panel(series, values.reshape(series.shape), path, title),
                                    f"{feature} attribution")
        sections.append((f"{feature} ({modality})", content))
    return sections


def _shapley_note(shapley, i):
    how = ("each modality left out as the model learned to go without it (its mask)" if shapley.baseline == "masks"
           else "each modality replaced by a zero input (the model has no masks: a blank input it may never have "
                "seen)")
    return (f'<p class="note">Shapley values over every subset of modalities, {how}: they sum to '
            f'{shapley.full[i]:.3f} - {shapley.empty[i]:.3f} (the answer with every modality left out).</p>')


def words_of(feature, ids):
    """`(tokens, their positions)` of a text's ids: the tokenizer's vocabulary, padding left out."""
    vocabulary = feature.tokenizer.vocabulary or []
    kept = [j for j, token in enumerate(ids) if token != 0]
    return [str(vocabulary[ids[j]]) if ids[j] < len(vocabulary) else f"#{ids[j]}" for j in kept], kept


def seconds_per_frame(model, feature):
    """Seconds between the log-mel frames of `feature`'s encoder (1.0 when it has none)."""
    from mbm_keras.explain.gradients import encoder_of

    try:
        layer = encoder_of(model, feature).get_layer("log_mel")
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
