"""`task.kind: retrieval`: two towers of the model's features (`task.query`,
`task.candidate`) trained contrastively (`build_retrieval_model`); validation
and `evaluate` score each query's own candidate among all (recall@k, MRR,
and class-level mAP when examples of a class match); each tower exports on
its own (`deploy/retrieval_export.py`). A fused candidate is compared with
each of its features alone, and the better is kept."""

import os

import numpy as np

from mbm_keras.errors import ConfigError
from mbm_keras.tasks.base import Task, has_masks, model_features, register_task

# build_fusion_model arguments that a retrieval model sets per tower (or that only classifiers have).
_PER_TOWER = {"features", "fusion", "fusion_kwargs", "share_encoders", "compile", "num_classes", "head"}


def build_from_config(task, model_cfg, model_kwargs):
    """The retrieval model (uncompiled) of `task` with the model section's features split into towers."""
    from mbm_keras.modalities import list_modalities
    from mbm_keras.retrieval import build_retrieval_model

    features = {name: {"modality": f["modality"], "encoder": f["encoder"], "kwargs": f["kwargs"], **f["options"]}
                for name, f in model_features(model_cfg).items()}
    modality_keys = set(list_modalities()) | {f"{m}_kwargs" for m in list_modalities()}
    options = {k: v for k, v in model_kwargs.items() if k not in _PER_TOWER and k not in modality_keys}
    return build_retrieval_model(
        query={n: features[n] for n in task["query"]}, candidate={n: features[n] for n in task["candidate"]},
        embedding_dim=task["embedding_dim"], fusion=model_cfg["fusion"], fusion_kwargs=model_cfg["fusion_kwargs"],
        share_towers=task["share_towers"], temperature=task["temperature"], compile=False, **options)


def loss_and_metrics(task):
    from mbm_keras.retrieval import ContrastiveLoss, in_batch_accuracy

    return ContrastiveLoss(task["hard_negatives"]), [in_batch_accuracy]


def embed_pairs(model, dataset):
    """`(query vectors, candidate vectors, labels or None)` of every row of a
    `contrastive_dataset` (or `make_dataset`) dataset."""
    from mbm_keras.retrieval import tower_inputs

    towers = [model.get_layer("query_tower"), model.get_layer("candidate_tower")]
    vectors, labels = [[], []], []
    for batch in dataset:
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        for i, tower in enumerate(towers):
            vectors[i].append(np.asarray(tower(tower_inputs(tower, x), training=False)))
        if y is not None:
            labels.append(np.asarray(y))
    return np.concatenate(vectors[0]), np.concatenate(vectors[1]), (np.concatenate(labels) if labels else None)


def validation_scores(model, val_ds, supervised):
    """`summary.json` of a retrieval run: recall@k and MRR of each validation
    row's own candidate among all validation candidates, and class-level mAP
    and precision@k when examples of a class match."""
    from mbm_keras.retrieval import retrieval_metrics

    if val_ds is None:
        return {"task": "retrieval", "why": "no data.val"}
    queries, candidates, labels = embed_pairs(model, val_ds)
    labels = labels if supervised else None
    return {"task": "retrieval", "rows": int(len(queries)),
            "val": retrieval_metrics(queries, candidates, labels, labels)}


def keep_better(summary, single_scores):
    """The fusion's rule for a fused candidate: each candidate feature alone
    (its own two-tower model, trained on the same rows) is compared with the
    fused candidate on validation (mAP when examples of a class match, else
    MRR); the best single feature is kept when it scores above the fused one.
    Adds `singles`, `metric` and `kept` to `summary`; returns the kept feature or None."""
    metric = "map" if "map" in summary["val"] else "mrr"
    summary["metric"] = metric
    summary["singles"] = {f: s["val"][metric] for f, s in single_scores.items()}
    fused = summary["val"][metric]
    best = max(summary["singles"], key=summary["singles"].get)
    if summary["singles"][best] > fused:
        summary["fused_val"] = summary["val"]
        summary["val"] = single_scores[best]["val"]
        summary["kept"] = (f"the candidate {best!r} alone: validation {metric} {summary['singles'][best]:.4f} "
                           f"above the fused candidate's {fused:.4f}; the fused model is in fusion/")
        return best
    summary["kept"] = f"the fused candidate: validation {metric} {fused:.4f}, each feature alone " + ", ".join(
        f"{f} {v:.4f}" for f, v in summary["singles"].items())
    return None


def format_scores(summary):
    if "val" not in summary:
        return [f"Retrieval: {summary.get('why', 'not measured')}"]
    scores = ", ".join(f"{k} {v:.3f}" for k, v in summary["val"].items())
    kept = [f"kept: {summary['kept']}"] if summary.get("kept") else []
    return kept + [f"Retrieval on {summary['rows']} validation rows (each query among all their candidates): {scores}"]


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


def _check_towers(config, source):
    task = config["task"]
    features = list(model_features(config["model"]))
    for key in ("query", "candidate"):
        names = task[key]
        if not names:
            raise ConfigError(f"{source}: task.kind retrieval needs task.{key}: the features of its {key} tower, "
                              f"e.g. task.{key}: [{features[0] if features else 'text'}] (features: "
                              f"{', '.join(features) or 'none'})")
        unknown = [n for n in names if n not in features]
        if unknown:
            raise ConfigError(f"{source}: task.{key} names {unknown}, which the model has not (its features: "
                              f"{', '.join(features)})")
    both = sorted(set(task["query"]) & set(task["candidate"]))
    if both:
        raise ConfigError(f"{source}: {both} are in both task.query and task.candidate; each feature feeds one "
                          f"tower (for same-modality search name two features, e.g. question and answer, and set "
                          f"task.share_towers: true for one set of weights)")


@register_task("retrieval")
class Retrieval(Task):
    options = {
        "query": (list, None),
        "candidate": (list, None),
        "embedding_dim": (int, 128),
        # None: by label when data.columns has one (examples of a class match), else each row's own pair.
        "supervised": (bool, None),
        "hard_negatives": (int, None),
        "temperature": (float, 0.07),
        "share_towers": (bool, False),
    }
    docs = {
        "query": "The features of the query tower.",
        "candidate": "The features of the candidate tower (several: a fused candidate, compared with each alone).",
        "embedding_dim": "The size of both towers' unit vectors.",
        "supervised": "Rows of one label match each other (None: when data.columns has a label).",
        "hard_negatives": "Each query's k hardest in-batch negatives only (None: all).",
        "temperature": "The softmax temperature of the similarities.",
        "share_towers": "One set of weights for both towers (features of one modality).",
    }
    ranges = {"embedding_dim": (1, None, True, None), "hard_negatives": (1, None, True, None),
              "temperature": (0.01, None, True, None)}
    predicts = False
    endpoints = ("search", "embed")

    def check_config(self, config, source):
        _check_towers(config, source)
        super().check_config(config, source)

    def batches(self, ctx, dataset):  # (features, what makes two rows match)
        from mbm_keras.retrieval import contrastive_dataset

        return contrastive_dataset(dataset, ctx.task["supervised"])

    def build(self, ctx):
        return build_from_config(ctx.task, ctx.model_cfg, ctx.model_kwargs)

    def loss_and_metrics(self, ctx):
        return loss_and_metrics(ctx.task)

    def validate(self, ctx, model):
        task = ctx.task
        supervised = task["supervised"] is not False and ctx.pre.labels is not None
        summary = validation_scores(model, ctx.val_ds, supervised)
        if ctx.val_ds is None or len(task["candidate"]) < 2:
            return summary
        scores = {}  # a fused candidate against each of its features
        for feature in task["candidate"]:
            ctx.singles[feature] = ctx.train_single(
                feature, task["query"] + [feature], dataset=ctx.train_ds,
                build=lambda f=feature: build_from_config({**task, "candidate": [f]}, ctx.model_cfg,
                                                          ctx.model_kwargs))
            scores[feature] = validation_scores(ctx.singles[feature], ctx.val_ds, supervised)
        kept = keep_better(summary, scores)
        if kept:
            ctx.plan.groups = {kept: task["query"] + [kept]}
            summary["kept_modality"] = kept
        return summary

    def tuning_score(self, summary):
        if "val" not in summary:
            raise ValueError(f"the run has no validation score ({summary.get('why', 'not measured')})")
        metric = "map" if "map" in summary["val"] else "mrr"
        return metric, summary["val"][metric], "max"

    def format_scores(self, summary):
        return format_scores(summary)

    def recognizes(self, model, pre):
        return model is not None and "query_tower" in [layer.name for layer in model.layers]

    def evaluate(self, run_dir, model, pre, manifest, out, batch_size=32, on_error="raise",
                 allow_outside_root=False, robustness=False, beam=None):
        """Each row's query among every row's candidate of `manifest` (paired
        rows): recall@1/5/10 and MRR, with labels class-level mAP and
        precision@k too, and the recall@k curve (`<out without .json>-recall.png`)."""
        from mbm_keras.data import make_dataset
        from mbm_keras.retrieval import retrieval_metrics

        if robustness or beam is not None:
            raise ValueError(f"{'robustness' if robustness else 'beam'} does not apply to a retrieval run")
        ds = make_dataset(manifest, preprocessor=pre, batch_size=batch_size, missing_modalities=has_masks(model),
                          on_error=on_error, allow_outside_root=allow_outside_root)
        queries, candidates, labels = embed_pairs(model, ds)
        results = {"task": "retrieval", "examples": int(len(queries)), "skipped": ds.report["skipped"]}
        results.update(retrieval_metrics(queries, candidates, labels, labels))
        ks = sorted({k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k <= len(candidates)} | {len(candidates)})
        curve = retrieval_metrics(queries, candidates, ks=ks)
        results["recall_at_k"] = {str(k): curve[f"recall@{k}"] for k in ks}
        plot = os.path.splitext(out)[0] + "-recall.png"
        name = os.path.splitext(os.path.basename(os.fspath(manifest)))[0]
        _plot_recall(results["recall_at_k"], plot, f"{os.path.basename(os.path.abspath(run_dir))} on {name}")
        results["recall_plot"] = plot
        return results

    def report_lines(self, results):
        return [f"recall@k plot: {results['recall_plot']}"] if "recall_plot" in results else []

    def export(self, model, pre, format, folder, quantize, examples, say):
        from mbm_keras.deploy.retrieval_export import export_retrieval

        return export_retrieval(model, pre, format, folder, quantize, examples, say)

    def serving_functions(self, model, pre):
        from mbm_keras.deploy.retrieval_export import serving_functions

        return serving_functions(model, pre)

    def report_check(self, check, format, quantize, say):
        say(f"Checked against Keras on {check['examples']} examples: lowest cosine similarity "
            + ", ".join(f"{k} {v:.5f}" for k, v in check["min_cosine"].items())
            + f", top-10 overlap {100 * check['top10_overlap']:.1f}%")

    def check_predictable(self, path, artifact):
        raise ValueError(f"{path} is a retrieval model: it embeds queries and candidates; use mbm-keras embed, "
                         f"mbm-keras index and mbm-keras search")
