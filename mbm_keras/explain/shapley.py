"""Shapley values of a model's features (modalities): how much each one moved the answer.

A feature is "absent" as the model learned it: a model built with `missing_modalities` has a `<feature>_mask`
input, and setting it to 0 swaps the feature's encoding for the model's trained "absent" embedding
(`layers.ModalityMask`), the way it was trained to go without that feature. A model without masks cannot leave
a feature out; its features are then replaced by zero inputs (a black image, silence, empty text, the
training means of standardized cells), inputs the model may never have seen, so its values say how far the
answer moves from such a blank input rather than what the model makes of a missing one.

Exact for up to `EXACT_UP_TO` features (every subset: 2^m model calls per example, batched), sampled by
permutations beyond. Both are efficient by construction: each example's values sum to the full model's output
minus the all-absent output (`full - empty`).
"""

import dataclasses
import itertools
import math

import numpy as np

EXACT_UP_TO = 6
CHUNK_ROWS = 2048  # model inputs held at once: examples x subsets


@dataclasses.dataclass
class ShapleyValues:
    """Per-example Shapley values.

    Attributes:
        features: the features, in the columns' order.
        values: `(examples, features)`: each feature's contribution to the explained output.
        full: `(examples,)`: the output with every feature present.
        empty: `(examples,)`: the output with every feature absent (`values` sum to `full - empty`).
        targets: `(examples,)`: the explained output column (a class index; 0 for a single output).
        baseline: "masks" (the model's learned absent embeddings) or "zeros" (zero inputs; see the module doc).
        exact: every subset was evaluated (False: `permutations` sampled).
        permutations: the number of sampled permutations (0 when exact).
    """

    features: list
    values: np.ndarray
    full: np.ndarray
    empty: np.ndarray
    targets: np.ndarray
    baseline: str
    exact: bool
    permutations: int = 0

    def mean(self, by=None):
        """`{feature: mean value}` over the examples, or with `by` (one key per example, e.g. the class)
        `{key: {feature: mean value}}`."""
        if by is None:
            return {f: float(v) for f, v in zip(self.features, self.values.mean(axis=0))}
        by = np.asarray(by)
        return {key: {f: float(v) for f, v in zip(self.features, self.values[by == key].mean(axis=0))}
                for key in dict.fromkeys(by.tolist())}


def explained_features(model):
    """`(features, has masks)`: a model's feature inputs (not `<feature>_mask`) and whether each has a mask."""
    names = [t.name for t in model.inputs] if not isinstance(model.input, dict) else list(model.input)
    features = [n for n in names if not n.endswith("_mask")]
    masks = all(f"{f}_mask" in names for f in features)
    return features, masks


def absent_inputs(inputs, features, present, masks):
    """`inputs` with the features not in `present` absent: their mask 0, or (no masks) their input zeros."""
    out = dict(inputs)
    for feature in features:
        if feature in present:
            continue
        if masks:
            out[f"{feature}_mask"] = np.zeros_like(np.asarray(inputs[f"{feature}_mask"]))
        else:
            out[feature] = np.zeros_like(np.asarray(inputs[feature]))
    return out


def _outputs(model, inputs, batch_size):
    y = model.predict(inputs, batch_size=batch_size, verbose=0)
    y = np.asarray(y, np.float64)
    return y.reshape(len(y), -1)


def _subset_outputs(model, inputs, features, subsets, masks, batch_size):
    """`(examples, subsets, outputs)`: the model on every example with each subset of features present."""
    n = len(next(iter(inputs.values())))
    batch = {k: np.concatenate([absent_inputs(inputs, features, s, masks)[k] for s in subsets])
             for k in inputs}
    y = _outputs(model, batch, batch_size)  # subset-major: rows s * n + i
    return y.reshape(len(subsets), n, -1).transpose(1, 0, 2)


def modality_shapley(model, inputs, targets=None, permutations=64, batch_size=256, seed=0):
    """Shapley values of each feature of `model` for each example of `inputs`.

    Args:
        model: a functional Keras model of named feature inputs (`build_fusion_model`'s), best built with
            `missing_modalities=True` (see the module doc for models without masks).
        inputs: `{input: array}`, preprocessed examples (a `make_dataset` batch), masks included.
        targets: the explained output column per example (class indices), one int for all, or None: each
            example's predicted class (a single-output model: its output).
        permutations: with more than `EXACT_UP_TO` features, the permutations sampled per example.
        batch_size: examples per model call.
        seed: the permutations' seed.

    Returns:
        `ShapleyValues`.

    Examples:
        >>> shap = modality_shapley(model, batch)
        >>> shap.mean()
        {'image': 0.31, 'audio': 0.12}
    """
    features, masks = explained_features(model)
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    if masks:
        inputs = {**inputs, **{f"{f}_mask": np.ones((len(inputs[f]), 1), np.float32) if f"{f}_mask" not in inputs
                               else inputs[f"{f}_mask"] for f in features}}
    missing = [f for f in features if f not in inputs]
    if missing:
        raise ValueError(f"inputs lack the model's feature {missing[0]!r}; it takes {', '.join(features)}")
    m, n = len(features), len(inputs[features[0]])
    full = _outputs(model, inputs, batch_size)
    targets = _targets(targets, full, n)
    evaluations = 2 ** m if m <= EXACT_UP_TO else min(2 ** m, permutations * (m + 1))  # subsets per example
    chunk = max(1, CHUNK_ROWS // evaluations)  # examples per pass: each pass is chunk x evaluations rows
    parts = [_shapley(model, {k: v[i:i + chunk] for k, v in inputs.items()}, features, masks, targets[i:i + chunk],
                      permutations, batch_size, np.random.default_rng([seed, i]))
             for i in range(0, n, chunk)]
    values, empty = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return ShapleyValues(features, values, full[np.arange(n), targets], empty, targets, "masks" if masks else "zeros",
                         exact=m <= EXACT_UP_TO, permutations=0 if m <= EXACT_UP_TO else permutations)


def _shapley(model, inputs, features, masks, targets, permutations, batch_size, rng):
    """`(values, empty)` of a chunk of examples."""
    m, n = len(features), len(targets)
    rows = np.arange(n)
    if m <= EXACT_UP_TO:
        subsets = [frozenset(c) for size in range(m + 1) for c in itertools.combinations(features, size)]
        outputs = _subset_outputs(model, inputs, features, subsets, masks, batch_size)[rows, :, targets]  # (n, 2^m)
        value = {s: outputs[:, i] for i, s in enumerate(subsets)}
        values = np.zeros((n, m))
        for j, feature in enumerate(features):
            for s in subsets:
                if feature in s:
                    continue
                weight = math.factorial(len(s)) * math.factorial(m - len(s) - 1) / math.factorial(m)
                values[:, j] += weight * (value[s | {feature}] - value[s])
        return values, value[frozenset()]
    orders = [list(rng.permutation(m)) for _ in range(permutations)]
    prefixes = [[frozenset(features[j] for j in order[:k]) for k in range(m + 1)] for order in orders]
    unique = list(dict.fromkeys(s for chain in prefixes for s in chain))  # each subset evaluated once
    outputs = _subset_outputs(model, inputs, features, unique, masks, batch_size)[rows, :, targets]
    value = {s: outputs[:, i] for i, s in enumerate(unique)}
    values = np.zeros((n, m))
    for order, chain in zip(orders, prefixes):
        for k, j in enumerate(order):
            values[:, j] += value[chain[k + 1]] - value[chain[k]]
    return values / permutations, value[frozenset()]


def _targets(targets, full, n):
    if targets is None:
        return np.argmax(full, axis=1) if full.shape[1] > 1 else np.zeros(n, int)
    targets = np.broadcast_to(np.asarray(targets, int), (n,)).copy()
    if ((targets < 0) | (targets >= full.shape[1])).any():
        raise ValueError(f"targets must be output columns 0 to {full.shape[1] - 1}. Received: {targets.tolist()}")
    return targets
