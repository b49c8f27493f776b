"""Why a retrieval model matches a query with a candidate: which query words (or pixels, sounds, cells) and
which candidate regions drove the match.

The explained output is the match score: the cosine of the two towers' unit vectors (`match_model`), the
number `mbm-keras search` ranks by. Its Shapley values share it among both towers' features; integrated
gradients attribute it to each feature's inputs, the query's and the candidate's at once.
"""

import os

import numpy as np

from mbm_keras.explain import report
from mbm_keras.explain.gradients import integrated_gradients
from mbm_keras.explain.shapley import explained_features, modality_shapley


def match_model(model):
    """A model of both towers' inputs whose output is each pair's match score, `(batch, 1)`: the dot product
    of the query's and the candidate's unit vectors (their cosine).

    Args:
        model: a retrieval model (`build_retrieval_model`'s, or a retrieval run's `model.keras`).

    Examples:
        >>> scorer = match_model(model)
        >>> integrated_gradients(scorer, {**query_inputs, **candidate_inputs}, target=0)
    """
    import keras

    try:
        towers = [model.get_layer("query_tower"), model.get_layer("candidate_tower")]
    except ValueError:
        raise ValueError(f"{model.name} is not a retrieval model: it has no query_tower and candidate_tower") from None
    inputs = [{k: keras.Input(v.shape[1:], dtype=v.dtype, name=k) for k, v in tower.input.items()} for tower in towers]
    score = keras.layers.Dot(axes=1, name="match_score")([tower(x) for tower, x in zip(towers, inputs)])
    return keras.Model({**inputs[0], **inputs[1]}, score, name="match")


def explain_matches(run, model, pre, manifest, rows, out, options):
    """Each row's query against its own candidate (the pair the row holds): see `explain`."""
    from mbm_keras.data import make_dataset
    from mbm_keras.explain.explaining import (completeness_note, decoded_rows, feature_sections, image_baselines,
                                             say, warn_incomplete)
    from mbm_keras.tasks.base import has_masks

    scorer = match_model(model)
    features, _ = explained_features(scorer)
    towers = {name: [f for f in model.get_layer(f"{name}_tower").input if not f.endswith("_mask")]
              for name in ("query", "candidate")}
    side = {f: name for name, fs in towers.items() for f in fs}
    chosen = manifest.subset(rows)
    if pre.labels is not None and pre.columns.get("label") not in chosen.columns:
        pre = pre.without_labels()
    x, _ = decoded_rows(make_dataset(chosen, preprocessor=pre, batch_size=len(rows),
                                     missing_modalities=has_masks(model), verbose=False), out)
    x = {k: v for k, v in x.items() if k in scorer.input}
    shapley = modality_shapley(scorer, x, targets=0)
    labels = [f"{side[f]}: {f}" for f in shapley.features]
    explained = []
    for i, row in enumerate(rows):
        say(options, i, row, rows)
        example = {k: v[i:i + 1] for k, v in x.items()}
        attributions = integrated_gradients(scorer, example, target=0, baselines=image_baselines(pre, options),
                                            steps=options["steps"], tolerance=options["tolerance"],
                                            smoothgrad=options["smoothgrad"])
        warn_incomplete(options, row, attributions)
        folder = os.path.join(out, f"row-{row}")
        os.makedirs(folder, exist_ok=True)
        score = float(shapley.full[i])
        png = report.shapley_panel(labels, shapley.values[i], os.path.join(folder, "modalities.png"),
                                   f"each feature's share of the match score {score:.3f}", unit="share of the score")
        how = ("each feature left out as the model learned to go without it (its mask)" if shapley.baseline == "masks"
               else "each feature replaced by a zero input (the model has no masks: an empty text, a black image, "
                    "silence)")
        note = (f'<p class="note">Shapley values over every subset of both towers\' features, {how}: they sum to '
                f'{score:.3f} - {shapley.empty[i]:.3f} (the score with every feature left out).</p>')
        sections = [("Features (Shapley values)", report.inline(png, "feature Shapley values") + note)]
        for heading, content in feature_sections(scorer, pre, attributions, example, folder, "the match score"):
            sections.append((f"{side[heading.split(' ')[0]]}: {heading}", content))
        title = f"Row {row}: the query matches its candidate with score {score:.3f}"
        report.write_page(os.path.join(out, f"row-{row}.html"),
                          report.page(title, completeness_note(attributions), sections))
        explained.append({"row": row, "score": score, "empty": float(shapley.empty[i]),
                          "shapley": dict(zip(shapley.features, map(float, shapley.values[i]))),
                          "attribution_totals": attributions.totals(), "steps": attributions.steps,
                          "completeness_error": attributions.error})
    summary = {"run": os.path.abspath(run), "data": manifest.path, "task": "retrieval", "towers": towers,
               "features": shapley.features, "baseline": shapley.baseline, "exact": shapley.exact,
               "rows": explained, "mean_shapley": shapley.mean()}
    report.write_page(os.path.join(out, "index.html"), _index_page(summary, labels, out))
    return summary


def _index_page(summary, labels, out):
    features = summary["features"]
    mean = summary["mean_shapley"]
    png = report.shapley_panel(labels, [mean[f] for f in features], os.path.join(out, "modalities.png"),
                               f"mean Shapley values over {len(summary['rows'])} pairs", unit="share of the score")
    head = "".join(f"<th>{label}</th>" for label in labels)
    lines = "".join(f'<tr><td><a href="row-{e["row"]}.html">row {e["row"]}</a></td><td>{e["score"]:.3f}</td>'
                    + "".join(f"<td>{e['shapley'][f]:+.3f}</td>" for f in features) + "</tr>"
                    for e in summary["rows"])
    sections = [("Each feature's share of the match, averaged", report.inline(png, "mean Shapley values")),
                ("Pairs", f"<table><tr><th>row</th><th>score</th>{head}</tr>{lines}</table>")]
    return report.page(f"Matches of {os.path.basename(summary['run'])} on {os.path.basename(summary['data'])}", "",
                       sections)
