"""Retrieval metrics, computed by keras-rs' ranking metrics on query x catalogue scores."""

import numpy as np


def retrieval_metrics(queries, candidates, query_labels=None, candidate_labels=None, ks=(1, 5, 10), chunk=256):
    """recall@k and MRR of each query's own candidate (row i of both), and
    class-level mAP and precision@k when labels are given.

    Args:
        queries, candidates: L2-normalized embeddings, `(n, d)` and `(m, d)`;
            query i's own candidate is candidate i (when `m >= n`).
        query_labels, candidate_labels: classes; a candidate of the query's
            class is relevant for the class-level metrics.
        ks: the cut-offs of recall@k.
        chunk: queries scored at a time (memory: chunk x m floats).

    Returns:
        `{"recall@1": ..., "mrr": ..., "map": ..., "class_precision@1": ...}`
        (floats; the class-level ones only with labels). recall@k is the
        share of queries whose own candidate is in their top k; class
        precision@k, the share of a query's top k that are of its class.

    Examples:
        >>> retrieval_metrics(q, c, labels, labels)["map"]
    """
    import keras_rs

    queries, candidates = np.asarray(queries, np.float32), np.asarray(candidates, np.float32)
    labelled = query_labels is not None and candidate_labels is not None
    paired = len(candidates) >= len(queries)
    metrics = {}
    if paired:
        metrics.update({f"recall@{k}": keras_rs.metrics.RecallAtK(k=k, shuffle_ties=False) for k in ks})
        metrics["mrr"] = keras_rs.metrics.MeanReciprocalRank(shuffle_ties=False)
    if labelled:
        query_labels, candidate_labels = np.asarray(query_labels), np.asarray(candidate_labels)
        metrics["map"] = keras_rs.metrics.MeanAveragePrecision(shuffle_ties=False)
        metrics.update({f"class_precision@{k}": keras_rs.metrics.PrecisionAtK(k=k, shuffle_ties=False) for k in ks})
    if not metrics:
        raise ValueError("retrieval_metrics needs paired rows (as many candidates as queries) or labels")
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ candidates.T
        rows = np.arange(start, start + len(scores))
        if paired:
            own = np.zeros_like(scores)
            own[np.arange(len(scores)), rows] = 1
            for k in ks:
                metrics[f"recall@{k}"].update_state(own, scores)
            metrics["mrr"].update_state(own, scores)
        if labelled:
            same = (query_labels[rows, None] == candidate_labels[None, :]).astype(np.float32)
            metrics["map"].update_state(same, scores)
            for k in ks:
                metrics[f"class_precision@{k}"].update_state(same, scores)
    return {name: float(metric.result()) for name, metric in metrics.items()}
