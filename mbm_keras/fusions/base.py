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

    Example:
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

    Example:
        >>> list_fusions()
        ['attention', 'concat', 'gated', 'late', 'low_rank_tensor']
    """
    return FUSIONS.list(pattern)


def create_fusion(name, **kwargs):
    """Builds the fusion layer registered as `name` (the layer is named "fusion").

    Args:
        name: a name from `list_fusions()`.
        **kwargs: the layer's arguments, e.g. `units`.

    Example:
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

    Example:
        >>> @register_fusion("sum", description="sum of per-modality projections")
        ... class SumFusion(Fusion):
        ...     def build_fusion(self, dims):
        ...         self.projections = [keras.layers.Dense(self.units) for _ in dims]
        ...         for layer, d in zip(self.projections, dims):
        ...             layer.build((None, d))
        ...     def fuse(self, features):
        ...         return sum(p(f) for p, f in zip(self.projections, features))
    """

    produces_logits = False

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
