"""`build_fusion_model()`: encoders -> fusion -> head, as one functional model."""

import dataclasses
import numbers

import keras

from mbm_keras.encoders import create_encoder, encoder_info, list_encoders
from mbm_keras.finetune import freeze_backbones
from mbm_keras.fusions import FUSIONS, create_fusion
from mbm_keras.heads import get_head
from mbm_keras.layers import MaskByPresence, ModalityMask
from mbm_keras.modalities import get_modality, list_modalities
from mbm_keras.model_spec import (CompileOptions, EncoderOptions, Feature, FusionModelSpec, FusionOptions, HeadOptions,
                                  InputOptions)


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def input_specs(features, options, feature_options=None):
    """`{feature: (shape, dtype)}` of the model inputs, checked.

    Args:
        features: `{feature: modality}`.
        options: model options shared by every feature of a modality
            (`image_shape`, `text_length`, ...).
        feature_options: `{feature: {option: value}}` overrides per feature.
    """
    specs = {}
    for feature, modality in features.items():
        cls = get_modality(modality)
        merged = {**cls.MODEL_OPTIONS, **{k: v for k, v in options.items() if k in cls.MODEL_OPTIONS},
                  **(feature_options or {}).get(feature, {})}
        checked = cls.check_model_options(merged)
        specs[feature] = (*cls.input_spec(checked), cls.encoder_kwargs(checked))
    return specs


def normalize_features(features):
    """`features=` as `{feature: {"modality", "encoder", "kwargs", "options"}}`, checked.

    A feature is a `model_spec.Feature`, `(modality, encoder)` or a dict with `modality`, `encoder`,
    optional `kwargs` (encoder builder overrides) and model options of its
    modality (e.g. `text_length`)."""
    if not isinstance(features, dict) or not features:
        raise ValueError(f"features must be a non-empty dict such as {{'front': ('image', 'small_cnn')}}. "
                         f"Received: features={features!r}")
    out = {}
    for name, spec in features.items():
        if isinstance(spec, Feature):
            spec = spec.as_dict()
        if not isinstance(name, str) or not name.isidentifier() or name.endswith("_mask"):
            raise ValueError(f"feature names must be identifiers not ending in _mask. Received: {name!r}")
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            spec = {"modality": spec[0], "encoder": spec[1]}
        if not isinstance(spec, dict) or not {"modality", "encoder"} <= set(spec):
            raise ValueError(f"features[{name!r}] must be (modality, encoder) or a dict with 'modality' and "
                             f"'encoder'. Received: {spec!r}")
        cls = get_modality(spec["modality"])
        unknown = set(spec) - {"modality", "encoder", "kwargs"} - set(cls.MODEL_OPTIONS)
        if unknown:
            raise ValueError(f"features[{name!r}] has unknown key(s) {sorted(unknown)}; valid: modality, encoder, "
                             f"kwargs, {', '.join(cls.MODEL_OPTIONS)}")
        out[name] = {"modality": spec["modality"], "encoder": spec["encoder"], "kwargs": dict(spec.get("kwargs") or {}),
                     "options": {k: v for k, v in spec.items() if k in cls.MODEL_OPTIONS}}
    return out


def _check_sharing(share_encoders, features, specs):
    """`{feature: owner}` of features that call another feature's encoder."""
    share = dict(share_encoders or {})
    for user, owner in share.items():
        for name in (user, owner):
            if name not in features:
                raise ValueError(f"share_encoders names {name!r}, which is not a feature ({', '.join(features)}). "
                                 f"Received: share_encoders={share_encoders!r}")
        if owner in share or user == owner:
            raise ValueError(f"share_encoders maps a feature to the feature that owns the encoder; {owner!r} shares "
                             f"another's itself. Received: share_encoders={share_encoders!r}")
        a, b = features[user], features[owner]
        if (a["modality"], a["encoder"]) != (b["modality"], b["encoder"]) or specs[user] != specs[owner]:
            raise ValueError(f"Features {user!r} and {owner!r} share an encoder, so they need the same modality, "
                             f"encoder and input: {user!r} is {a['modality']}/{a['encoder']} {specs[user][:2]}, "
                             f"{owner!r} is {b['modality']}/{b['encoder']} {specs[owner][:2]}")
        if a["kwargs"] and a["kwargs"] != b["kwargs"]:
            raise ValueError(f"Feature {user!r} shares {owner!r}'s encoder; give encoder kwargs on {owner!r} only")
    return share


def pretrained_encoders():
    """Names of the encoders that have a pretrained backbone."""
    return [n for n in list_encoders() if encoder_info(n)["pretrained_file"]]


def build_fusion_model(
    image=None,
    text=None,
    audio=None,
    tabular=None,
    *,
    features=None,
    share_encoders=None,
    fusion="concat",
    head="softmax",
    num_classes=2,
    image_shape=(224, 224, 3),
    text_length=64,
    vocab_size=20000,
    audio_length=16000,
    sample_rate=16000,
    tabular_dim=None,
    feature_options=None,
    weights=None,
    freeze_backbone=False,
    dropout=0.0,
    missing_modalities=False,
    image_kwargs=None,
    text_kwargs=None,
    audio_kwargs=None,
    tabular_kwargs=None,
    fusion_kwargs=None,
    compile=True,
    learning_rate=1e-3,
    name="fusion_model",
    spec=None,
    **more,
):
    """Builds a multimodal model: one encoder per feature, a fusion, a head.

    The result is a plain functional `keras.Model` with one named input per
    feature (plus `<feature>_mask` with `missing_modalities=True`); its layers
    read `<feature>_encoder` -> `fusion` -> `predictions`. `image=`, `text=`,
    `audio=`, `tabular=` (and any other registered modality, e.g.
    `timeseries=`) add one feature named after its modality: input `image`
    is float32 RGB in [0, 255], `text` int32 token ids (0 = padding), `audio`
    float32 mono in [-1, 1], `tabular` and `timeseries` float32.

    Args:
        image, text, audio, tabular: encoder names from `list_encoders(modality)`;
            None leaves the modality out.
        features: named features, several per modality allowed:
            `{"front": ("image", "resnet50"), "title": ("text", "bilstm")}`, or
            per feature a dict with `modality`, `encoder`, optional `kwargs`
            (encoder overrides) and that modality's model options
            (`{"modality": "text", "encoder": "gru", "vocab_size": 900}`).
            At least one feature (here or by modality keyword) is needed.
        share_encoders: `{feature: other feature}`: the first feature is
            encoded by the second's encoder, one set of weights for both
            (same modality, encoder and input shape).
        fusion: a name from `list_fusions()`. Sequence fusions
            (`transformer`, `cross_attention`) take each encoder's sequence
            and padding mask instead of its pooled vector.
        head: "softmax" (multi-class), "sigmoid" (multi-label) or "linear"
            (regression).
        num_classes: classes, or regression targets for the linear head.
        image_shape: `(height, width, 3)` of image features.
        text_length: tokens per text (padded/truncated by the data pipeline).
        vocab_size: size of the token vocabulary (ids < vocab_size).
        audio_length: samples per clip.
        sample_rate: samples per second of the audio.
        tabular_dim: number of tabular features.
        feature_options: `{feature: {model option: value}}`: options of one
            feature (what `Preprocessor.model_kwargs()` gives for several
            features of a modality).
        weights: weights of the image encoders: None (random), "imagenet"
            (Keras' download and cache) or a weights file path.
        freeze_backbone: freeze the pretrained backbone (stage one of
            fine-tuning; see `unfreeze_backbone`).
        dropout: dropout rate applied to each encoder's features.
        missing_modalities: add a `<feature>_mask` input (float32 `(1,)`, 1
            present / 0 absent) per feature; an absent feature is replaced by
            a learned "absent" embedding before the fusion.
            `mbm_keras.data.make_dataset(..., missing_modalities=True)` feeds them.
        image_kwargs, text_kwargs, audio_kwargs, tabular_kwargs: overrides
            for that modality's encoder builder (e.g. `{"units": 128}`;
            `weights` for a non-image encoder's weights file).
        fusion_kwargs: arguments of the fusion layer (e.g. `{"units": 256}`).
        compile: compile with Adam and the head's loss and metrics.
        learning_rate: Adam's learning rate when compiling.
        name: the model's name.
        spec: the whole model as one `mbm_keras.model_spec.FusionModelSpec`
            (feature specs and option objects) instead of the keywords above;
            no other argument may be given with it.
        **more: another registered modality's encoder (`timeseries="gru"`),
            its `<modality>_kwargs` and its model options (`timeseries_length`,
            `timeseries_channels`).

    Returns:
        A `keras.Model`.

    Examples:
        >>> model = build_fusion_model(image="resnet50", text="bilstm", fusion="concat",
        ...                            num_classes=10, image_shape=(224, 224, 3),
        ...                            text_length=64, vocab_size=20000,
        ...                            weights="imagenet", freeze_backbone=True)
        >>> model.fit({"image": images, "text": token_ids}, labels)
        >>> cars = build_fusion_model(
        ...     features={"front": ("image", "small_cnn"), "rear": ("image", "small_cnn"),
        ...               "speed": ("timeseries", "series_gru")},
        ...     share_encoders={"rear": "front"}, timeseries_channels=3, num_classes=4)
        >>> same = build_fusion_model(spec=FusionModelSpec(
        ...     features={"front": Feature("image", "small_cnn"), "rear": Feature("image", "small_cnn"),
        ...               "speed": Feature("timeseries", "series_gru")},
        ...     share_encoders={"rear": "front"}, head=HeadOptions(num_classes=4),
        ...     inputs=InputOptions(more={"timeseries_channels": 3})))
    """
    if spec is not None:
        _check_spec_alone(locals())
    else:
        spec = spec_from_kwargs(
            dict(image=image, text=text, audio=audio, tabular=tabular), more, features=features,
            share_encoders=share_encoders, fusion=fusion, head=head, num_classes=num_classes,
            options=dict(image_shape=image_shape, text_length=text_length, vocab_size=vocab_size,
                         audio_length=audio_length, sample_rate=sample_rate, tabular_dim=tabular_dim),
            feature_options=feature_options, weights=weights, freeze_backbone=freeze_backbone, dropout=dropout,
            missing_modalities=missing_modalities, fusion_kwargs=fusion_kwargs, compile=compile,
            learning_rate=learning_rate, name=name,
            kwargs_of=dict(image=image_kwargs, text=text_kwargs, audio=audio_kwargs, tabular=tabular_kwargs))
    return _build(spec)


def _check_spec_alone(arguments):
    """`spec=` describes the whole model: any other argument given with it is an error, not ignored."""
    import inspect

    defaults = {n: p.default for n, p in inspect.signature(build_fusion_model).parameters.items()
                if p.default is not inspect.Parameter.empty}
    given = sorted(n for n, default in defaults.items() if n != "spec" and arguments[n] is not default
                   and arguments[n] != default)
    given += sorted(arguments.get("more") or {})
    if given:
        raise TypeError(f"build_fusion_model(spec=...) takes the whole model from the spec; these arguments were "
                        f"given too: {', '.join(given)}. Put them in the spec (dataclasses.replace(spec, ...)).")
    if not isinstance(arguments["spec"], FusionModelSpec):
        raise TypeError(f"spec must be a mbm_keras.model_spec.FusionModelSpec. Received: spec={arguments['spec']!r}")


def spec_from_kwargs(by_modality, more, *, features, share_encoders, fusion, head, num_classes, options,
                     feature_options, weights, freeze_backbone, dropout, missing_modalities, fusion_kwargs, compile,
                     learning_rate, name, kwargs_of):
    """The `FusionModelSpec` of `build_fusion_model`'s keyword call (`by_modality`: its four modality keywords;
    `more`: its `**more`, where another modality's encoder, `<modality>_kwargs` and model options arrive)."""
    options = dict(options)
    chosen = _chosen_features(dict(by_modality), dict(kwargs_of), options, features, more)
    per_feature = {f: {**(feature_options or {}).get(f, {}), **spec["options"]} for f, spec in chosen.items()}
    known = {f.name for f in dataclasses.fields(InputOptions)}
    return FusionModelSpec(
        features={f: Feature(s["modality"], s["encoder"], s["kwargs"], per_feature[f]) for f, s in chosen.items()},
        fusion=FusionOptions(fusion, fusion_kwargs), head=HeadOptions(head, num_classes),
        inputs=InputOptions(**{k: v for k, v in options.items() if k in known},
                            more={k: v for k, v in options.items() if k not in known}),
        encoders=EncoderOptions(weights, freeze_backbone, dropout, missing_modalities),
        share_encoders=share_encoders, compile=CompileOptions(learning_rate) if compile else None, name=name)


def _build(spec):
    """The model of a `FusionModelSpec`: inputs, encoders, fusion, head (and compiled)."""
    chosen = normalize_features({f: feature.as_dict() for f, feature in spec.features.items()})
    options, enc = spec.inputs.as_dict(), spec.encoders
    _check_weights_and_dropout(chosen, enc.weights, enc.dropout)
    head_spec = get_head(spec.head.kind)
    head_spec.check_outputs(spec.head.num_classes)
    specs = input_specs({f: s["modality"] for f, s in chosen.items()}, options,
                        {f: s["options"] for f, s in chosen.items()})
    share = _check_sharing(spec.share_encoders, chosen, specs)
    fusion = spec.fusion.name
    fusion_kwargs = _fusion_kwargs(fusion, spec.fusion.kwargs, spec.head.num_classes)
    inputs, features_out = _encoded_features(chosen, specs, share, FUSIONS.get(fusion).needs_sequences, enc.weights,
                                             enc.missing_modalities, enc.dropout)
    fusion_layer = create_fusion(fusion, **fusion_kwargs)
    fused = fusion_layer(features_out)
    outputs = head_spec.predictions(fused, spec.head.num_classes, from_logits=fusion_layer.produces_logits)
    model = keras.Model(inputs, outputs, name=spec.name)
    if enc.freeze_backbone and not freeze_backbones(model):
        raise ValueError(
            f"freeze_backbone=True, but the encoders {sorted({s['encoder'] for s in chosen.values()})} have no "
            f"pretrained backbone to freeze (those are: {', '.join(pretrained_encoders())})."
        )
    if spec.compile is not None:
        model.compile(
            optimizer=keras.optimizers.Adam(spec.compile.learning_rate),
            loss=head_spec.loss(),
            metrics=head_spec.metrics(),
        )
    return model


def _chosen_features(by_modality, kwargs_of, options, features, more):
    """`{feature: {"modality", "encoder", "kwargs", "options"}}` from the modality keywords (this signature's
    four and any registered one in `more`), their `<modality>_kwargs`, and `features=`; model options found in
    `more` go into `options`."""
    modalities = list_modalities()
    model_options = {k for m in modalities for k in get_modality(m).MODEL_OPTIONS}
    for key, value in more.items():
        if key in modalities:
            by_modality[key] = value
        elif key.endswith("_kwargs") and key[: -len("_kwargs")] in modalities:
            kwargs_of[key[: -len("_kwargs")]] = value
        elif key in model_options:
            options[key] = value
        else:
            raise TypeError(f"build_fusion_model() got an unexpected keyword argument {key!r} (not a modality, "
                            f"<modality>_kwargs or model option of the registered modalities: {', '.join(modalities)})")
    chosen = {m: {"modality": m, "encoder": enc, "kwargs": dict(kwargs_of.get(m) or {}), "options": {}}
              for m, enc in by_modality.items() if enc is not None}
    named = normalize_features(features) if features is not None else {}
    clash = set(chosen) & set(named)
    if clash:
        raise ValueError(f"Feature(s) {sorted(clash)} given both as a modality keyword and in features=")
    chosen.update(named)
    if not chosen:
        raise ValueError(f"build_fusion_model needs at least one of {', '.join(m + '=' for m in modalities)} "
                         f"or features=.")
    for feature, spec in chosen.items():
        if feature in named:  # features= kwargs are per feature; <modality>_kwargs apply to all of its features
            spec["kwargs"] = {**dict(kwargs_of.get(spec["modality"]) or {}), **spec["kwargs"]}
    return chosen


def _takes_weights():
    """The modalities whose encoders take `weights=` (image: keras.applications backbones)."""
    return [m for m in list_modalities() if get_modality(m).WEIGHTS_ARGUMENT]


def _check_weights_and_dropout(chosen, weights, dropout):
    takes_weights = _takes_weights()
    if weights is not None and not any(f["modality"] in takes_weights for f in chosen.values()):
        raise ValueError(
            f"weights= sets the {'/'.join(takes_weights)} encoder's weights, but no {'/'.join(takes_weights)}= "
            f"encoder was given. Received: weights={weights!r}. Pass other encoders' weights in their *_kwargs."
        )
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")


def _fusion_kwargs(fusion, fusion_kwargs, num_classes):
    """The fusion's arguments; a fusion that outputs logits (`late`) has the classes as its units."""
    fusion_kwargs = dict(fusion_kwargs or {})
    if FUSIONS.get(fusion).produces_logits:
        if "units" in fusion_kwargs and fusion_kwargs["units"] != num_classes:
            raise ValueError(
                f"Fusion {fusion!r} outputs logits, so its units equal num_classes={num_classes}. "
                f"Received: fusion_kwargs={fusion_kwargs}"
            )
        fusion_kwargs["units"] = num_classes
    return fusion_kwargs


def _encoded_features(chosen, specs, share, sequences, weights, missing_modalities, dropout):
    """`(inputs, features)`: one `keras.Input` per feature (and `<feature>_mask`), and what the fusion takes
    of each: its encoder's vector (or, for a sequence fusion, its sequence and `<feature>_mask`), an absent
    feature's replaced by a learned embedding (or masked out), then dropout."""
    takes_weights = _takes_weights()
    inputs, features_out, encoders = {}, {}, {}
    for feature, spec in chosen.items():
        shape, dtype, encoder_kwargs = specs[feature]
        inputs[feature] = keras.Input(shape, dtype=dtype, name=feature)
        if feature in share:
            continue
        kwargs = {**spec["kwargs"], "name": f"{feature}_encoder"}
        if spec["modality"] in takes_weights:
            kwargs.setdefault("weights", weights)
        encoders[feature] = create_encoder(spec["encoder"], spec["modality"], shape, sequence=sequences,
                                           offered=encoder_kwargs, **kwargs)
    for feature in chosen:
        x = encoders[share.get(feature, feature)](inputs[feature])
        if sequences:  # {"pooled", "sequence", "mask"}: the fusion takes the sequence and its mask
            x, mask = x["sequence"], x["mask"]
        if missing_modalities:
            presence = keras.Input((1,), dtype="float32", name=f"{feature}_mask")
            inputs[f"{feature}_mask"] = presence
            if sequences:  # an absent feature's tokens are masked out
                mask = MaskByPresence(name=f"{feature}_absent")([mask, presence])
            else:
                x = ModalityMask(name=f"{feature}_absent")([x, presence])
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{feature}_dropout")(x)
        features_out[feature] = x
        if sequences:
            features_out[f"{feature}_mask"] = mask
    return inputs, features_out
