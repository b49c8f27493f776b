"""Autoencoders that pretrain zoo encoders on unlabelled files.

Each feature's encoder (any zoo encoder, built exactly as `build_fusion_model`
builds it) is the encoder half; a small decoder rebuilds what the input
holds from the encoder's output, and the encoder's weights are what is kept:

| modality | corruption (training only) | reconstructed from | target |
| --- | --- | --- | --- |
| image | Gaussian pixel noise | the pooled vector (conv decoder) | the clean image, in [0, 1] |
| audio | Gaussian waveform noise | the pooled vector | the clean clip's log-mel spectrogram, standardized per frame |
| text | tokens replaced by the unknown id | each token's sequence state | the replaced tokens' ids (masked-token prediction) |
| others (tabular, timeseries, plugins) | Gaussian noise | the pooled vector | the clean input |

The model is functional: its one output is each example's loss (the sum over
features), trained with `per_example_loss`, so it saves and reloads with
`safe_mode=True` and resumes like any run. Model-side code: keras only.
"""

import math

import keras
from keras import ops

from mbm_keras.encoders import create_encoder
from mbm_keras.fusion_model import input_specs
from mbm_keras.modalities import get_modality

DEFAULTS = {"noise": 0.1, "mask_rate": 0.15}


@keras.saving.register_keras_serializable(package="mbm_keras")
def per_example_loss(y_true, y_pred):
    """The autoencoder's loss: its output already is each example's loss.

    Args:
        y_true: unused (the batches carry zeros).
        y_pred: each example's loss, from the model.

    Examples:
        >>> model.compile(optimizer="adam", loss=per_example_loss)
    """
    return y_pred


@keras.saving.register_keras_serializable(package="mbm_keras")
class TokenMasking(keras.layers.Layer):
    """In training, replaces each non-padding token with `mask_id` with
    probability `rate`; returns `[ids, masked (float 0/1)]`. At inference (the
    validation loss, the picture) it masks every `round(1 / rate)`-th token
    instead, so the score is reproducible.

    Examples:
        >>> ids, masked = TokenMasking(0.15)(keras.Input((8,), dtype="int32"))
    """

    def __init__(self, rate=0.15, mask_id=1, padding_id=0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.mask_id, self.padding_id, self.seed = float(rate), int(mask_id), int(padding_id), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training=False):
        ids = ops.cast(ids, "int32")
        if training:
            chosen = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.rate
        else:
            every = max(1, round(1 / self.rate)) if self.rate > 0 else 0
            positions = ops.arange(ops.shape(ids)[1])[None, :] + ops.zeros_like(ids)
            chosen = ops.equal(positions % every, every // 2) if every else ops.zeros_like(ids) > 0
        masked = ops.logical_and(chosen, ops.not_equal(ids, self.padding_id))
        return [ops.where(masked, self.mask_id, ids), ops.cast(masked, self.compute_dtype)]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape), tuple(input_shape)]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "mask_id": self.mask_id, "padding_id": self.padding_id,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="mbm_keras")
class MaskedTokenLoss(keras.layers.Layer):
    """`[logits (batch, steps, vocab), ids (batch, steps), masked (batch, steps)]`
    -> each example's mean cross-entropy over its masked tokens (0 where none is).

    Examples:
        >>> loss = MaskedTokenLoss()([logits, ids, masked])   # (batch,)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # the masked positions are its input; a Keras mask ends here

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs, mask=None):
        logits, ids, masked = inputs
        logits = ops.cast(logits, "float32")
        per_token = keras.losses.sparse_categorical_crossentropy(ids, logits, from_logits=True)
        masked = ops.cast(masked, "float32")
        return ops.sum(per_token * masked, axis=1) / ops.maximum(ops.sum(masked, axis=1), 1.0)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0],)


@keras.saving.register_keras_serializable(package="mbm_keras")
class ReconstructionError(keras.layers.Layer):
    """`[target, reconstruction]` (same shape) -> each example's mean squared error.

    Examples:
        >>> error = ReconstructionError()([clean, rebuilt])   # (batch,)
    """

    def call(self, inputs):
        target, rebuilt = (ops.cast(x, "float32") for x in inputs)
        squared = ops.square(ops.stop_gradient(target) - rebuilt)
        return ops.mean(ops.reshape(squared, (ops.shape(squared)[0], -1)), axis=1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0],)


def _image_part(p, x, pooled, shape):
    height, width, channels = shape
    target = keras.layers.Rescaling(1.0 / 255, name=f"{p}_target")(x)
    cells = (max(1, math.ceil(height / 8)), max(1, math.ceil(width / 8)))
    y = keras.layers.Dense(cells[0] * cells[1] * 64, activation="relu", name=f"{p}_decoder_dense")(pooled)
    y = keras.layers.Reshape((*cells, 64), name=f"{p}_decoder_grid")(y)
    for i, filters in enumerate((64, 32, 16)):
        y = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu",
                                         name=f"{p}_decoder_up{i + 1}")(y)
    y = keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name=f"{p}_decoder_pixels")(y)
    rebuilt = keras.layers.Resizing(height, width, name=f"{p}_reconstruction")(y)
    return target, rebuilt


def _audio_part(p, x, pooled, options):
    from mbm_keras.layers import LogMelSpectrogram

    rate = options["sample_rate"]
    window = max(2, int(round(rate * 0.025)))
    mel = LogMelSpectrogram(fft_length=1 << (window - 1).bit_length(), sequence_stride=max(1, int(round(rate * 0.01))),
                            sequence_length=window, sampling_rate=rate, num_mel_bins=40, max_freq=rate / 2,
                            power_to_db=True, name=f"{p}_target_log_mel")(x)
    frames = keras.layers.Permute((2, 1), name=f"{p}_target_frames")(mel)
    # Standardized per frame, with no trainable scale (a learnable target could shrink to nothing).
    target = keras.layers.LayerNormalization(axis=-1, center=False, scale=False, name=f"{p}_target")(frames)
    steps, bins = target.shape[1], target.shape[2]
    y = keras.layers.Dense(256, activation="relu", name=f"{p}_decoder_hidden")(pooled)
    y = keras.layers.Dense(steps * bins, name=f"{p}_decoder_frames")(y)
    return target, keras.layers.Reshape((steps, bins), name=f"{p}_reconstruction")(y)


def _generic_part(p, x, pooled, shape):
    size = int(math.prod(shape))
    y = keras.layers.Dense(max(64, min(size, 256)), activation="relu", name=f"{p}_decoder_hidden")(pooled)
    y = keras.layers.Dense(size, name=f"{p}_decoder_values")(y)
    target = keras.layers.Identity(name=f"{p}_target")(x)
    return target, keras.layers.Reshape(tuple(shape), name=f"{p}_reconstruction")(y)


def build_autoencoder(features, options=None, feature_options=None, noise=0.1, mask_rate=0.15, seed=None,
                      learning_rate=1e-3, compile=True):
    """An autoencoder per feature around its zoo encoder, as one model.

    Args:
        features: `{feature: (modality, encoder)}` or
            `{feature: {"modality", "encoder", "kwargs"}}`.
        options: model options (`image_shape`, `text_length`, `vocab_size`,
            `sample_rate`, ...), as `Preprocessor.model_kwargs()` gives them.
        feature_options: `{feature: {option: value}}` per-feature overrides.
        noise: Gaussian noise of image (times 255), audio and other inputs in
            training.
        mask_rate: the share of text tokens masked in training.
        seed: seed of the text masking.
        learning_rate: Adam's, when `compile`.
        compile: compile with `per_example_loss`.

    Returns:
        A functional `keras.Model` from the feature inputs to each example's
        loss; the encoders are its layers `<feature>_encoder`, and
        `reconstruction_model(model, feature)` gives targets and rebuilt inputs.

    Examples:
        >>> model = build_autoencoder({"image": ("image", "small_cnn")}, {"image_shape": (32, 32, 3)})
        >>> model.fit(images, np.zeros(len(images)), epochs=5)
    """
    from mbm_keras.fusion_model import normalize_features

    specs = {name: (s if isinstance(s, dict) else {"modality": s[0], "encoder": s[1]}) for name, s in features.items()}
    specs = normalize_features(specs)
    if not specs:
        raise ValueError("build_autoencoder needs at least one feature, e.g. {'image': ('image', 'small_cnn')}")
    options = dict(options or {})
    inputs, losses = {}, []
    shapes = input_specs({f: s["modality"] for f, s in specs.items()}, options, feature_options)
    for feature, spec in specs.items():
        shape, dtype, offered = shapes[feature]
        modality = spec["modality"]
        x = inputs[feature] = keras.Input(shape, dtype=dtype, name=feature)
        text = modality == "text"
        encoder = create_encoder(spec["encoder"], modality, shape, sequence=text, offered=offered,
                                 **{**spec["kwargs"], "name": f"{feature}_encoder"})
        if text:
            ids, masked = TokenMasking(mask_rate, mask_id=1, seed=seed, name=f"{feature}_masking")(x)
            out = encoder(ids)
            vocab = offered["vocab_size"]
            logits = keras.layers.Dense(vocab, name=f"{feature}_reconstruction")(out["sequence"])
            target = keras.layers.Identity(name=f"{feature}_target")(x)
            losses.append(MaskedTokenLoss(name=f"{feature}_loss")([logits, target, masked]))
            continue
        noisy = x
        if noise:  # images in [0, 255]: the noise is `noise` of the range
            scale = 255.0 if modality == "image" else 1.0
            noisy = keras.layers.Rescaling(1.0 / scale, name=f"{feature}_unit")(noisy) if scale != 1 else noisy
            noisy = keras.layers.GaussianNoise(noise, name=f"{feature}_noise")(noisy)
            noisy = keras.layers.Rescaling(scale, name=f"{feature}_back")(noisy) if scale != 1 else noisy
        pooled = encoder(noisy)
        if modality == "image":
            target, rebuilt = _image_part(feature, x, pooled, shape)
        elif modality == "audio":
            target, rebuilt = _audio_part(feature, x, pooled, {**get_modality("audio").MODEL_OPTIONS, **options})
        else:
            target, rebuilt = _generic_part(feature, x, pooled, shape)
        losses.append(ReconstructionError(name=f"{feature}_loss")([target, rebuilt]))
    total = losses[0] if len(losses) == 1 else keras.layers.Add(name="loss")(losses)
    model = keras.Model(inputs, total, name="autoencoder")
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=per_example_loss)
    return model


def reconstruction_model(model, feature):
    """`inputs -> [target, reconstruction]` of one feature's autoencoder (for
    pictures; text: the ids and the per-token logits).

    Args:
        model: from `build_autoencoder`.
        feature: one of its features.

    Examples:
        >>> target, rebuilt = reconstruction_model(model, "image").predict(batch)
    """
    return keras.Model(model.inputs, [model.get_layer(f"{feature}_target").output,
                                      model.get_layer(f"{feature}_reconstruction").output])
