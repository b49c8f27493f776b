"""`task.kind: retrieval` in `train()`: the two-tower model a config describes, and its validation scores."""

import numpy as np

from mbm_keras.training.config import model_features

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
