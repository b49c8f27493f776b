"""`build_fusion_model()`: encoders -> fusion -> head, as one functional model."""

import numbers

import keras

from mbm_keras.encoders import create_encoder, encoder_info, list_encoders
from mbm_keras.finetune import freeze_backbones
from mbm_keras.fusions import create_fusion
from mbm_keras.heads import get_head
from mbm_keras.layers import ModalityMask


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def input_specs(image_shape, text_length, audio_length, tabular_dim, modalities):
    """`{modality: (shape, dtype)}` of the model inputs, checked."""
    specs = {}
    if "image" in modalities:
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise ValueError(f"image_shape must be (height, width, channels). Received: image_shape={image_shape!r}")
        specs["image"] = (tuple(int(d) for d in shape), "float32")
    if "text" in modalities:
        specs["text"] = ((_check_int("text_length", text_length),), "int32")
    if "audio" in modalities:
        specs["audio"] = ((_check_int("audio_length", audio_length),), "float32")
    if "tabular" in modalities:
        if tabular_dim is None:
            raise ValueError("tabular= needs tabular_dim (the number of feature columns). Received: tabular_dim=None")
        specs["tabular"] = ((_check_int("tabular_dim", tabular_dim),), "float32")
    return specs


def pretrained_encoders():
    """Names of the encoders that have a pretrained backbone."""
    return [n for n in list_encoders() if encoder_info(n)["pretrained_file"]]


def build_fusion_model(
    image=None,
    text=None,
    audio=None,
    tabular=None,
    *,
    fusion="concat",
    head="softmax",
    num_classes=2,
    image_shape=(224, 224, 3),
    text_length=64,
    vocab_size=20000,
    audio_length=16000,
    sample_rate=16000,
    tabular_dim=None,
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
):
    """Builds a multimodal model: one encoder per modality, a fusion, a head.

    The result is a plain functional `keras.Model` with dict inputs named
    `image` (float32 RGB in [0, 255]), `text` (int32 token ids, 0 = padding),
    `audio` (float32 mono waveform in [-1, 1]) and `tabular` (float32), only
    those requested; its layers read `<modality>_encoder` -> `fusion` ->
    `predictions`.

    Args:
        image, text, audio, tabular: encoder names from `list_encoders(modality)`;
            None leaves the modality out. At least one is needed.
        fusion: a name from `list_fusions()`.
        head: "softmax" (multi-class), "sigmoid" (multi-label) or "linear"
            (regression).
        num_classes: classes, or regression targets for the linear head.
        image_shape: `(height, width, 3)`.
        text_length: tokens per text (padded/truncated by the data pipeline).
        vocab_size: size of the token vocabulary (ids < vocab_size).
        audio_length: samples per clip.
        sample_rate: samples per second of the audio.
        tabular_dim: number of tabular features.
        weights: weights of the image encoder: None (random), "imagenet"
            (Keras' download and cache) or a weights file path.
        freeze_backbone: freeze the pretrained backbone (stage one of
            fine-tuning; see `unfreeze_backbone`).
        dropout: dropout rate applied to each encoder's features.
        missing_modalities: add a `<modality>_mask` input (float32 `(1,)`, 1
            present / 0 absent) per modality; an absent modality's features
            are replaced by a learned "absent" embedding before the fusion.
            `mbm_keras.data.make_dataset(..., missing_modalities=True)` feeds them.
        image_kwargs, text_kwargs, audio_kwargs, tabular_kwargs: overrides
            for that encoder's builder (e.g. `{"units": 128}`; `weights` for a
            non-image encoder's weights file).
        fusion_kwargs: arguments of the fusion layer (e.g. `{"units": 256}`).
        compile: compile with Adam and the head's loss and metrics.
        learning_rate: Adam's learning rate when compiling.
        name: the model's name.

    Returns:
        A `keras.Model`.

    Example:
        >>> model = build_fusion_model(image="resnet50", text="bilstm", fusion="concat",
        ...                            num_classes=10, image_shape=(224, 224, 3),
        ...                            text_length=64, vocab_size=20000,
        ...                            weights="imagenet", freeze_backbone=True)
        >>> model.fit({"image": images, "text": token_ids}, labels)
    """
    chosen = {
        m: enc
        for m, enc in (("image", image), ("text", text), ("audio", audio), ("tabular", tabular))
        if enc is not None
    }
    if not chosen:
        raise ValueError("build_fusion_model needs at least one of image=, text=, audio=, tabular=.")
    if weights is not None and "image" not in chosen:
        raise ValueError(
            f"weights= sets the image encoder's weights, but no image= encoder was given. "
            f"Received: weights={weights!r}. Pass other encoders' weights in their *_kwargs."
        )
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    head_spec = get_head(head)
    head_spec.check_outputs(num_classes)
    specs = input_specs(image_shape, text_length, audio_length, tabular_dim, chosen)
    overrides = {
        "image": dict(image_kwargs or {}),
        "text": dict(text_kwargs or {}),
        "audio": dict(audio_kwargs or {}),
        "tabular": dict(tabular_kwargs or {}),
    }
    overrides["image"].setdefault("weights", weights)
    if text is not None:
        overrides["text"].setdefault("vocab_size", _check_int("vocab_size", vocab_size, minimum=2))
    if audio is not None:
        overrides["audio"].setdefault("sample_rate", _check_int("sample_rate", sample_rate))

    # === Encoders ===
    inputs, features = {}, {}
    for modality, encoder_name in chosen.items():
        shape, dtype = specs[modality]
        inputs[modality] = keras.Input(shape, dtype=dtype, name=modality)
        encoder = create_encoder(encoder_name, modality, shape, **overrides[modality])
        x = encoder(inputs[modality])
        if missing_modalities:
            presence = keras.Input((1,), dtype="float32", name=f"{modality}_mask")
            inputs[f"{modality}_mask"] = presence
            x = ModalityMask(name=f"{modality}_absent")([x, presence])
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{modality}_dropout")(x)
        features[modality] = x

    # === Fusion ===
    fusion_kwargs = dict(fusion_kwargs or {})
    fusion_layer = create_fusion(fusion, **fusion_kwargs)
    if fusion_layer.produces_logits:
        if "units" in fusion_kwargs and fusion_kwargs["units"] != num_classes:
            raise ValueError(
                f"Fusion {fusion!r} outputs logits, so its units equal num_classes={num_classes}. "
                f"Received: fusion_kwargs={fusion_kwargs}"
            )
        fusion_layer = create_fusion(fusion, **{**fusion_kwargs, "units": num_classes})
    fused = fusion_layer(features)

    # === Head ===
    outputs = head_spec.predictions(fused, num_classes, from_logits=fusion_layer.produces_logits)
    model = keras.Model(inputs, outputs, name=name)

    if freeze_backbone:
        if not freeze_backbones(model):
            raise ValueError(
                f"freeze_backbone=True, but the encoders {sorted(chosen.values())} have no pretrained "
                f"backbone to freeze (those are: {', '.join(pretrained_encoders())})."
            )
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=head_spec.loss(),
            metrics=head_spec.metrics(),
        )
    return model

