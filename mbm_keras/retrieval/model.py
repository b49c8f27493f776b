"""`build_retrieval_model()`: two towers of zoo encoders and fusions, trained contrastively.

Model-side code: `keras.layers` and `keras.ops` only, so it runs on every Keras backend.
"""

import math
import numbers

import keras
from keras import ops

from mbm_keras.fusion_model import build_fusion_model, normalize_features

TOWERS = ("query", "candidate")


@keras.saving.register_keras_serializable(package="mbm_keras")
class SimilarityLogits(keras.layers.Layer):
    """Cosine similarities of every query with every candidate of a batch,
    times a learnable scale (1 / temperature, as in CLIP).

    Inputs `[queries (B, d), candidates (N, d)]`, both L2-normalized; output
    `(B, N)` logits. The scale is kept as its logarithm and capped at
    `max_scale` (CLIP's 100) so training cannot blow it up.

    Args:
        temperature: the starting temperature (0.07 in CLIP).
        learn_temperature: train the scale with the model.
        max_scale: the cap on 1 / temperature.

    Examples:
        >>> logits = SimilarityLogits()([query_embeddings, candidate_embeddings])
    """

    def __init__(self, temperature=0.07, learn_temperature=True, max_scale=100.0, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(temperature, numbers.Real) and 0 < temperature):
            raise ValueError(f"temperature must be a positive number. Received: temperature={temperature!r}")
        if not 1 / temperature <= max_scale:
            raise ValueError(f"temperature={temperature} gives a scale above max_scale={max_scale}")
        self.temperature = float(temperature)
        self.learn_temperature = bool(learn_temperature)
        self.max_scale = float(max_scale)

    def build(self, input_shape):
        self.log_scale = self.add_weight(
            shape=(), name="log_scale", trainable=self.learn_temperature,
            initializer=keras.initializers.Constant(math.log(1 / self.temperature)),
        )

    def scale(self):
        return ops.minimum(ops.exp(self.log_scale), self.max_scale)

    def call(self, inputs):
        queries, candidates = inputs
        similarity = ops.matmul(queries, ops.transpose(candidates))
        return similarity * ops.cast(self.scale(), similarity.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], input_shape[1][0])

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "learn_temperature": self.learn_temperature, "max_scale": self.max_scale}


def _positives(y_true, dtype):
    """`(B, B)`: 1 where two examples of a batch match. `y_true` holds each
    example's class (supervised: examples of a class are positives of each
    other) or a distinct id per example (each query's own candidate only)."""
    y = ops.reshape(y_true, (-1,))
    return ops.cast(ops.equal(ops.expand_dims(y, 1), ops.expand_dims(y, 0)), dtype)


@keras.saving.register_keras_serializable(package="mbm_keras")
class ContrastiveLoss(keras.losses.Loss):
    """Symmetric in-batch contrastive loss (InfoNCE / CLIP) on `SimilarityLogits`.

    Each query's softmax over the batch's candidates is trained towards its
    positives, and each candidate's softmax over the batch's queries the same
    way; the loss is the mean of the two cross-entropies. `y_true` holds a
    class per example (supervised: same class = positive, the target spread
    evenly over the positives) or a distinct id per example (the pair's own
    candidate only; `contrastive_dataset` makes those).

    Args:
        hard_negatives: keep only this many of the highest-scoring negatives
            per row (keras-rs' `HardNegativeMining`); None keeps all.

    Examples:
        >>> model.compile("adam", loss=ContrastiveLoss(hard_negatives=16))
    """

    def __init__(self, hard_negatives=None, name="contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if hard_negatives is not None and not (isinstance(hard_negatives, int) and hard_negatives > 0):
            raise ValueError(f"hard_negatives must be a positive int or None. Received: hard_negatives={hard_negatives!r}")
        self.hard_negatives = hard_negatives

    def _one_side(self, logits, positives):
        if self.hard_negatives is not None:
            import keras_rs

            logits, positives = keras_rs.layers.HardNegativeMining(self.hard_negatives)(logits, positives)
        targets = positives / ops.sum(positives, axis=1, keepdims=True)
        return keras.losses.categorical_crossentropy(targets, logits, from_logits=True)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        positives = _positives(y_true, logits.dtype)
        return (self._one_side(logits, positives) + self._one_side(ops.transpose(logits), ops.transpose(positives))) / 2

    def get_config(self):
        return {**super().get_config(), "hard_negatives": self.hard_negatives}


@keras.saving.register_keras_serializable(package="mbm_keras")
def in_batch_accuracy(y_true, y_pred):
    """Per query of a batch: 1 when its best-scoring candidate is a positive, else 0 (a Keras metric function).

    Args:
        y_true: each example's class, or a distinct id per example (as for `ContrastiveLoss`).
        y_pred: the `(B, B)` logits of `SimilarityLogits`.

    Examples:
        >>> model.compile("adam", loss=ContrastiveLoss(), metrics=[in_batch_accuracy])
    """
    positives = _positives(y_true, "float32")
    best = ops.argmax(y_pred, axis=1)
    return ops.take_along_axis(positives, ops.expand_dims(best, 1), axis=1)[:, 0]


def _tower(kind, features, embedding_dim, fusion, fusion_kwargs, options):
    core = build_fusion_model(features=features, fusion=fusion, fusion_kwargs=fusion_kwargs, head="linear",
                              num_classes=embedding_dim, compile=False, name=f"{kind}_fusion", **options)
    embedding = keras.layers.UnitNormalization(name=f"{kind}_embedding")(core.output)
    return keras.Model(core.input, embedding, name=f"{kind}_tower")


def build_retrieval_model(
    query,
    candidate,
    *,
    embedding_dim=128,
    fusion="concat",
    query_fusion=None,
    candidate_fusion=None,
    fusion_kwargs=None,
    share_towers=False,
    temperature=0.07,
    learn_temperature=True,
    hard_negatives=None,
    compile=True,
    learning_rate=1e-3,
    name="retrieval_model",
    **options,
):
    """Builds a two-tower retrieval model: queries and candidates embedded
    into one space, trained so that each query scores its own candidates
    (or those of its class) above the others.

    Each tower is a set of zoo features (encoders), fused by a zoo fusion,
    projected to `embedding_dim` and L2-normalized: a candidate can be an
    image with its description (the fused item), a query text, an image,
    audio or a mix. The model takes every feature of both towers (feature
    names must differ between them) and outputs the `(batch, batch)` scaled
    cosine similarities of `SimilarityLogits`; `model.get_layer("query_tower")`
    and `"candidate_tower"` are plain models that embed alone.

    Args:
        query, candidate: features of each tower, as `build_fusion_model`'s
            `features=`: `{"caption": ("text", "bilstm")}`,
            `{"photo": ("image", "small_cnn"), "description": ("text", "cnn")}`.
        embedding_dim: size of the shared embedding space.
        fusion: the fusion of both towers (a name from `list_fusions()`);
            `query_fusion` / `candidate_fusion` override it per tower.
        fusion_kwargs: arguments of the fusion layers.
        share_towers: one tower for both sides (same-modality search: a text
            finds texts); the query features then need the candidate's
            modalities and encoders, in order.
        temperature: starting softmax temperature of the similarities.
        learn_temperature: train it.
        hard_negatives: `ContrastiveLoss(hard_negatives=...)` when compiling.
        compile: compile with Adam, `ContrastiveLoss` and `in_batch_accuracy`.
        learning_rate: Adam's learning rate.
        name: the model's name.
        **options: `build_fusion_model`'s model options, shared by both
            towers (`image_shape`, `text_length`, `vocab_size`, `audio_length`,
            `sample_rate`, `tabular_dim`, `feature_options`, `weights`,
            `dropout`, `missing_modalities`, `<modality>_kwargs`;
            `Preprocessor.model_kwargs()` gives them; its `num_classes` and
            `head` are not used: a label column serves `contrastive_dataset`).

    Returns:
        A `keras.Model`.

    Examples:
        >>> model = build_retrieval_model(
        ...     query={"caption": ("text", "bilstm")},
        ...     candidate={"photo": ("image", "small_cnn"), "description": ("text", "cnn")},
        ...     embedding_dim=64, image_shape=(64, 64, 3), text_length=16, vocab_size=5000)
        >>> model.fit(contrastive_dataset(make_dataset("pairs.csv", preprocessor=pre, training=True)))
        >>> vectors = model.get_layer("candidate_tower").predict(catalogue)
    """
    embedding_dim = int(embedding_dim) if isinstance(embedding_dim, numbers.Integral) and embedding_dim > 0 else None
    if embedding_dim is None:
        raise ValueError("embedding_dim must be a positive int")
    # A labelled preprocessor's model_kwargs() also name the classes: labels are what supervised
    # contrastive training matches on (contrastive_dataset), not outputs of this model.
    options = {k: v for k, v in options.items() if k not in ("num_classes", "head")}
    for key in ("features", "share_encoders"):
        if key in options:
            raise TypeError(f"build_retrieval_model() takes no {key}= (each tower's features are query= and "
                            f"candidate=; the towers end in an embedding)")
    towers = {"query": normalize_features(query), "candidate": normalize_features(candidate)}
    clash = set(towers["query"]) & set(towers["candidate"])
    if clash:
        raise ValueError(f"Feature name(s) {sorted(clash)} appear in both towers; name them apart "
                         f"(e.g. query_text / item_text), or pass share_towers=True for one tower on both sides")
    for kind, tower_fusion in (("query", query_fusion), ("candidate", candidate_fusion)):
        if tower_fusion is not None and not isinstance(tower_fusion, str):
            raise ValueError(f"{kind}_fusion must be a fusion name. Received: {tower_fusion!r}")

    candidate_tower = _tower("candidate", candidate, embedding_dim, candidate_fusion or fusion, fusion_kwargs, options)
    if share_towers:
        query_tower = _shared_tower(towers, candidate_tower, options)
    else:
        query_tower = _tower("query", query, embedding_dim, query_fusion or fusion, fusion_kwargs, options)
    query_inputs = {k: keras.Input(v.shape[1:], dtype=v.dtype, name=k) for k, v in query_tower.input.items()}
    candidate_inputs = {k: keras.Input(v.shape[1:], dtype=v.dtype, name=k) for k, v in candidate_tower.input.items()}
    logits = SimilarityLogits(temperature, learn_temperature, name="similarity")(
        [query_tower(query_inputs), candidate_tower(candidate_inputs)])
    model = keras.Model({**query_inputs, **candidate_inputs}, logits, name=name)
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=ContrastiveLoss(hard_negatives),
                      metrics=[in_batch_accuracy])
    return model


def _shared_tower(towers, candidate_tower, options):
    """The candidate tower called on the query features: one set of weights."""
    query, candidate = towers["query"], towers["candidate"]
    pairs = list(zip(query, candidate))
    if len(query) != len(candidate) or any(
            (query[q]["modality"], query[q]["encoder"]) != (candidate[c]["modality"], candidate[c]["encoder"])
            for q, c in pairs):
        raise ValueError("share_towers=True needs query features with the candidate's modalities and encoders, in "
                         f"order. Received: query {[(v['modality'], v['encoder']) for v in query.values()]}, "
                         f"candidate {[(v['modality'], v['encoder']) for v in candidate.values()]}")
    names = dict(pairs)
    if options.get("missing_modalities"):
        names.update({f"{q}_mask": f"{c}_mask" for q, c in pairs})
    inputs = {q: keras.Input(candidate_tower.input[c].shape[1:], dtype=candidate_tower.input[c].dtype, name=q)
              for q, c in names.items()}
    return keras.Model(inputs, candidate_tower({c: inputs[q] for q, c in names.items()}), name="query_tower")


def tower_inputs(tower, x):
    """The entries of a batch that one tower reads.

    Args:
        tower: `model.get_layer("query_tower")` or `"candidate_tower"`.
        x: a dict of every feature of a batch (and masks).

    Examples:
        >>> vectors = tower(tower_inputs(tower, batch))
    """
    return {k: x[k] for k in tower.input}
