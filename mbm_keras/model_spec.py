"""Feature specs and option objects: a fused model described as one value.

`build_fusion_model` takes either its keywords (`image="resnet50", text="bilstm", num_classes=10,
image_shape=..., dropout=..., ...`) or one `FusionModelSpec`; the keyword call is turned into a spec
first (`fusion_model.spec_from_kwargs`), so both calls build through one path:

    >>> from mbm_keras import build_fusion_model
    >>> from mbm_keras.model_spec import (EncoderOptions, Feature, FusionModelSpec, FusionOptions,
    ...                                   HeadOptions, InputOptions)
    >>> spec = FusionModelSpec(
    ...     features={"front": Feature("image", "small_cnn"),
    ...               "title": Feature("text", "bilstm", kwargs={"units": 32}, options={"text_length": 16})},
    ...     fusion=FusionOptions("gated", {"units": 64}),
    ...     head=HeadOptions("softmax", num_classes=4),
    ...     inputs=InputOptions(image_shape=(64, 64, 3), vocab_size=5000),
    ...     encoders=EncoderOptions(dropout=0.1, missing_modalities=True))
    >>> model = build_fusion_model(spec=spec)

A spec is a frozen dataclass: `dataclasses.replace(spec, fusion=FusionOptions("transformer"))` is the
same model with another fusion, and `spec.to_kwargs()` gives the keywords (what a run's `config.json`
`model:` section holds).
"""

import dataclasses
from collections.abc import Mapping

__all__ = ["CompileOptions", "EncoderOptions", "Feature", "FusionModelSpec", "FusionOptions", "HeadOptions",
           "InputOptions"]


def _frozen(mapping, what):
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a dict. Received: {what}={mapping!r}")
    return dict(mapping)


@dataclasses.dataclass(frozen=True)
class Feature:
    """One input of a model: its modality, its encoder (a name from
    `list_encoders(modality)`), the encoder builder's arguments (`kwargs`,
    e.g. `{"units": 64}`) and this feature's own model options of its modality
    (`options`, e.g. `{"text_length": 16}`), which override `InputOptions`.

    Examples:
        >>> Feature("text", "bilstm", kwargs={"units": 32}, options={"text_length": 16})
    """

    modality: str
    encoder: str
    kwargs: Mapping = dataclasses.field(default_factory=dict)
    options: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "kwargs", _frozen(self.kwargs, "Feature.kwargs"))
        object.__setattr__(self, "options", _frozen(self.options, "Feature.options"))

    def as_dict(self):
        """The `features=` entry of `build_fusion_model`'s keyword call."""
        return {"modality": self.modality, "encoder": self.encoder, "kwargs": dict(self.kwargs), **self.options}


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """The model options every feature of a modality shares (a `Feature`'s
    `options` override them for that feature); `more` holds another
    registered modality's (`{"timeseries_length": 50, "timeseries_channels": 3}`).

    Examples:
        >>> InputOptions(image_shape=(64, 64, 3), vocab_size=5000, more={"timeseries_channels": 3})
    """

    image_shape: tuple = (224, 224, 3)
    text_length: int = 64
    vocab_size: int = 20000
    audio_length: int = 16000
    sample_rate: int = 16000
    tabular_dim: int = None
    more: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "more", _frozen(self.more, "InputOptions.more"))

    def as_dict(self):
        """`{option: value}`, `more` included."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "more"}
        return {**out, **self.more}


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
    """What applies to every encoder: the image backbones' `weights` (None,
    "imagenet" or a file), `freeze_backbone`, the `dropout` on each encoder's
    features, and `missing_modalities` (a `<feature>_mask` input per feature,
    an absent feature replaced by a learned embedding).

    Examples:
        >>> EncoderOptions(weights="imagenet", freeze_backbone=True, dropout=0.1)
    """

    weights: str = None
    freeze_backbone: bool = False
    dropout: float = 0.0
    missing_modalities: bool = False


@dataclasses.dataclass(frozen=True)
class FusionOptions:
    """The fusion: a name from `list_fusions()` and its layer's arguments.

    Examples:
        >>> FusionOptions("transformer", {"units": 64, "num_heads": 2})
    """

    name: str = "concat"
    kwargs: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "kwargs", _frozen(self.kwargs, "FusionOptions.kwargs"))


@dataclasses.dataclass(frozen=True)
class HeadOptions:
    """The head: "softmax" (multi-class), "sigmoid" (multi-label) or "linear"
    (regression), and its classes (or regression targets).

    Examples:
        >>> HeadOptions("sigmoid", num_classes=5)
    """

    kind: str = "softmax"
    num_classes: int = 2


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """Compiling with Adam and the head's loss and metrics (`compile=None`
    in a `FusionModelSpec` leaves the model uncompiled).

    Examples:
        >>> CompileOptions(learning_rate=3e-4)
    """

    learning_rate: float = 1e-3


@dataclasses.dataclass(frozen=True)
class FusionModelSpec:
    """A whole fused model: named `features`, which of them share an encoder
    (`share_encoders`: `{feature: owner}`), the fusion, the head, the shared
    input options, the encoders' options, how to compile, and the name.

    Examples:
        >>> spec = FusionModelSpec(features={"photo": Feature("image", "small_cnn"),
        ...                                  "caption": ("text", "cnn")},
        ...                        head=HeadOptions(num_classes=3))
        >>> model = build_fusion_model(spec=spec)
    """

    features: Mapping
    fusion: FusionOptions = FusionOptions()
    head: HeadOptions = HeadOptions()
    inputs: InputOptions = InputOptions()
    encoders: EncoderOptions = EncoderOptions()
    share_encoders: Mapping = dataclasses.field(default_factory=dict)
    compile: CompileOptions = CompileOptions()
    name: str = "fusion_model"

    def __post_init__(self):
        features = _frozen(self.features, "FusionModelSpec.features")
        for name, feature in features.items():
            if isinstance(feature, (tuple, list)) and len(feature) == 2:
                feature = Feature(*feature)
            if not isinstance(feature, Feature):
                raise TypeError(f"FusionModelSpec.features[{name!r}] must be a Feature or (modality, encoder). "
                                f"Received: {feature!r}")
            features[name] = feature
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "share_encoders", _frozen(self.share_encoders, "FusionModelSpec.share_encoders"))
        for field, cls in (("fusion", FusionOptions), ("head", HeadOptions), ("inputs", InputOptions),
                           ("encoders", EncoderOptions)):
            if not isinstance(getattr(self, field), cls):
                raise TypeError(f"FusionModelSpec.{field} must be a {cls.__name__}. "
                                f"Received: {getattr(self, field)!r}")
        if self.compile is not None and not isinstance(self.compile, CompileOptions):
            raise TypeError(f"FusionModelSpec.compile must be a CompileOptions or None. Received: {self.compile!r}")

    def to_kwargs(self):
        """`build_fusion_model`'s keywords for this spec (every feature in `features=`)."""
        return {
            "features": {name: f.as_dict() for name, f in self.features.items()},
            "share_encoders": dict(self.share_encoders) or None,
            "fusion": self.fusion.name, "fusion_kwargs": dict(self.fusion.kwargs) or None,
            "head": self.head.kind, "num_classes": self.head.num_classes,
            **self.inputs.as_dict(),
            **dataclasses.asdict(self.encoders),
            "compile": self.compile is not None,
            "learning_rate": (self.compile or CompileOptions()).learning_rate,
            "name": self.name,
        }
