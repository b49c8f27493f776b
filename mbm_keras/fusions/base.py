"""The fusion base class and registry (Ludwig's combiners, in Keras layers).

A fusion is a layer that takes a dict `{modality: features (batch, dim)}`
and returns one tensor: fused features `(batch, units)`, or, for fusions with
`produces_logits = True` (late fusion), the logits themselves.
"""

import keras
from keras import ops

from mbm_keras.registry import Registry

FUSIONS = Registry("fusion")


def register_fusion(name, description=""):
    """Class decorator: registers a `Fusion` subclass and makes it serializable.

    Args:
        name: the name `build_fusion_model(fusion=...)` takes.
        description: one line for `mbm-keras zoo`.

    Examples:
        >>> @register_fusion("sum", description="sum of projections")
        ... class SumFusion(Fusion):
        ...     ...
    """

    def decorator(cls):
        cls = keras.saving.register_keras_serializable(package="mbm_keras")(cls)
        return FUSIONS.register(name, description=description)(cls)

    return decorator


def list_fusions(pattern="*"):
    """Names of the registered fusions.

    Args:
        pattern: shell-style wildcard on the name, e.g. "*tensor*".

    Examples:
        >>> list_fusions()
        ['attention', 'concat', 'cross_attention', 'gated', 'late', 'low_rank_tensor', 'transformer']
    """
    return FUSIONS.list(pattern)


def create_fusion(name, **kwargs):
    """Builds the fusion layer registered as `name` (the layer is named "fusion").

    Args:
        name: a name from `list_fusions()`.
        **kwargs: the layer's arguments, e.g. `units`.

    Examples:
        >>> fusion = create_fusion("gated", units=64)
    """
    cls = FUSIONS.get(name)
    kwargs.setdefault("name", "fusion")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        # Keras reports unknown layer arguments as a ValueError.
        if isinstance(e, TypeError) or "Unrecognized keyword arguments" in str(e):
            raise TypeError(f"Fusion {name!r}: {e}. Check fusion_kwargs.") from None
        raise


class Fusion(keras.layers.Layer):
    """Base class: a dict of encoder outputs in, one tensor out.

    Subclasses implement `build_fusion(dims)` (create weights from the feature
    size of each modality, in sorted-name order) and `fuse(features)` (a list
    of tensors in the same order). Only keras.ops is used, so fusions run on
    every Keras backend.

    Args:
        units: size of the fused vector.

    Examples:
        >>> @register_fusion("sum", description="sum of per-modality projections")
        ... class SumFusion(Fusion):
        ...     def build_fusion(self, dims):
        ...         self.projections = [keras.layers.Dense(self.units) for _ in dims]
        ...         for layer, d in zip(self.projections, dims):
        ...             layer.build((None, d))
        ...     def fuse(self, features):
        ...         return sum(p(f) for p, f in zip(self.projections, features))
    """

    # What a fusion declares, read from the class before it is built:
    # it outputs logits itself (late fusion), it takes sequences, not pooled vectors.
    produces_logits = False
    needs_sequences = False
    min_features = 1  # features it needs (a model of one modality's features must have as many)

    def __init__(self, units=128, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive int. Received: units={units!r}")
        self.units = units

    def build(self, input_shape):
        if not isinstance(input_shape, dict) or not input_shape:
            raise ValueError(
                f"Fusion {self.name!r} takes a dict {{modality: features}}. "
                f"Received input shape: {input_shape}"
            )
        self.modalities = sorted(input_shape)
        dims = []
        for m in self.modalities:
            shape = tuple(input_shape[m])
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(
                    f"Fusion {self.name!r} needs pooled features (batch, dim) per modality. "
                    f"Received: {m} with shape {shape}"
                )
            dims.append(int(shape[-1]))
        self.build_fusion(dims)

    def call(self, features):
        return self.fuse([features[m] for m in self.modalities])

    def build_fusion(self, dims):
        raise NotImplementedError

    def add_projections(self, dims, units):
        """One dense projection per modality: lists of kernels and biases."""
        kernels = [
            self.add_weight(shape=(d, units), initializer="glorot_uniform", name=f"kernel_{m}")
            for m, d in zip(self.modalities, dims)
        ]
        biases = [
            self.add_weight(shape=(units,), initializer="zeros", name=f"bias_{m}")
            for m in self.modalities
        ]
        return kernels, biases

    @staticmethod
    def project(features, kernels, biases):
        """Applies the per-modality projections: [x_m W_m + b_m for each m]."""
        return [ops.matmul(x, k) + b for x, k, b in zip(features, kernels, biases)]

    def fuse(self, features):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0]
        return (batch, self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class SequenceFusion(Fusion):
    """Base class of fusions over each feature's *sequence* (image grid cells,
    text tokens, audio frames, time steps) instead of its pooled vector.

    `build_fusion_model` gives such a fusion one dict: `{feature: (batch,
    steps, dim)}` plus `{feature + "_mask": (batch, steps)}` (1 = a real
    token, 0 = padding or an absent feature). A pooled `(batch, dim)` input
    counts as one token, so the fusion also takes what other fusions take.
    Subclasses implement `build_fusion(shapes)` (`{feature: (steps, dim)}`,
    features in sorted-name order) and `fuse(tokens, masks)` (lists in the
    same order, tokens `(batch, steps, dim)`, masks `(batch, steps)`).

    Args:
        units: size of the tokens and of the fused vector.

    Examples:
        >>> fusion = create_fusion("transformer", units=64)
        >>> fusion.needs_sequences
        True
    """

    needs_sequences = True

    def __init__(self, units=64, **kwargs):
        super().__init__(units=units, **kwargs)
        # Text sequences arrive with Keras masks attached; the explicit masks are
        # what counts, and the fused vector carries none.
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def build(self, input_shape):
        if not isinstance(input_shape, dict) or not input_shape:
            raise ValueError(f"Fusion {self.name!r} takes a dict {{feature: sequence}}. Received input shape: "
                             f"{input_shape}")
        self.modalities = sorted(k for k in input_shape if not k.endswith("_mask"))
        shapes = {}
        for m in self.modalities:
            shape = tuple(input_shape[m])
            if len(shape) not in (2, 3) or shape[-1] is None:
                raise ValueError(f"Fusion {self.name!r} needs (batch, steps, dim) sequences or (batch, dim) vectors "
                                 f"per feature. Received: {m} with shape {shape}")
            shapes[m] = (1 if len(shape) == 2 else shape[1], int(shape[-1]))
        self.build_fusion(shapes)

    def call(self, features):
        tokens, masks = [], []
        for m in self.modalities:
            x = features[m]
            if len(x.shape) == 2:
                x = ops.expand_dims(x, 1)
            mask = features.get(f"{m}_mask")
            if mask is None:
                mask = ops.ones(ops.shape(x)[:2], dtype=x.dtype)
            tokens.append(x)
            masks.append(ops.cast(mask, x.dtype))
        return self.fuse(tokens, masks)

    def add_token_embeddings(self, shapes, units):
        """Per feature: a projection to `units`, a learned feature-type
        embedding and a learned position embedding (when its steps are known)."""
        self.projections = []
        for m in self.modalities:
            layer = keras.layers.Dense(units, name=f"project_{m}")
            layer.build((None, shapes[m][0], shapes[m][1]))
            self.projections.append(layer)
        self.type_embedding = self.add_weight(shape=(len(self.modalities), units), initializer="zeros",
                                              name="type_embedding")
        self.position_embeddings = [
            self.add_weight(shape=(shapes[m][0], units), initializer="zeros", name=f"position_{m}")
            if shapes[m][0] is not None else None
            for m in self.modalities
        ]

    def embed(self, tokens):
        """Projected tokens plus type and position embeddings, one tensor per feature."""
        out = []
        for i, x in enumerate(tokens):
            t = self.projections[i](x) + self.type_embedding[i]
            if self.position_embeddings[i] is not None:
                t = t + self.position_embeddings[i]
            out.append(t)
        return out

    @staticmethod
    def masked_mean(x, mask):
        """Mean over the real tokens: `(batch, steps, dim)`, `(batch, steps)` -> `(batch, dim)`."""
        weights = ops.expand_dims(mask, -1)
        return ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    @staticmethod
    def attention_mask(query_mask, key_mask):
        """`(batch, queries, keys)` booleans: which keys each query may attend to."""
        return ops.cast(ops.expand_dims(query_mask, -1) * ops.expand_dims(key_mask, 1), "bool")

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0]
        return (batch, self.units)


BLOCK_PARTS = ("attention", "norm1", "ffn1", "ffn2", "norm2")


def add_attention_block(layer, units, num_heads, ffn_units, dropout, name):
    """Makes one post-norm transformer block's sublayers (attention,
    feed-forward, two layer norms) as attributes `<name>_<part>` of `layer`
    (so Keras tracks and saves them); returns `name`."""
    parts = {
        "attention": keras.layers.MultiHeadAttention(num_heads, key_dim=max(1, units // num_heads), dropout=dropout,
                                                     name=f"{name}_attention"),
        "norm1": keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1"),
        "ffn1": keras.layers.Dense(ffn_units, activation="gelu", name=f"{name}_ffn1"),
        "ffn2": keras.layers.Dense(units, name=f"{name}_ffn2"),
        "norm2": keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2"),
    }
    for part, sublayer in parts.items():
        setattr(layer, f"{name}_{part}", sublayer)
    return name


def _parts(layer, name):
    return [getattr(layer, f"{name}_{part}") for part in BLOCK_PARTS]


def build_attention_block(layer, name, query_shape, key_shape):
    attention, norm1, ffn1, ffn2, norm2 = _parts(layer, name)
    attention.build(query_shape, key_shape)
    norm1.build(query_shape)
    ffn1.build(query_shape)
    ffn2.build((*query_shape[:-1], ffn1.units))
    norm2.build(query_shape)


def apply_attention_block(layer, name, query, keys, attention_mask):
    attention, norm1, ffn1, ffn2, norm2 = _parts(layer, name)
    x = norm1(query + attention(query, keys, attention_mask=attention_mask))
    return norm2(x + ffn2(ffn1(x)))
