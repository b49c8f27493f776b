"""Small serializable layers used inside models (keras.ops only, no tf.*)."""

import keras
import numpy as np
from keras import ops

# Per-channel statistics used by keras.applications' `preprocess_input` modes.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")


@keras.saving.register_keras_serializable(package="mbm_keras")
class ImagePreprocessing(keras.layers.Layer):
    """Maps RGB floats in [0, 255] to what a backbone was trained on.

    The modes are those of `keras.applications.imagenet_utils.preprocess_input`:
    "caffe" (RGB->BGR, minus the ImageNet mean; ResNet50, VGG16), "tf"
    (scaled to [-1, 1]), "torch" (scaled to [0, 1], then standardized) and
    "none". Keeping this inside the model means exported models take raw pixels.

    Args:
        mode: one of "caffe", "tf", "torch", "none".

    Examples:
        >>> x = ImagePreprocessing("caffe")(keras.Input((32, 32, 3)))
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"mode must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(images, axis=-1) - ops.convert_to_tensor(
                _CAFFE_MEAN_BGR, dtype=self.compute_dtype
            )
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
            return (images / 255.0 - mean) / std
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="mbm_keras")
class ModalityMask(keras.layers.Layer):
    """Replaces the features of an absent modality with a learned embedding.

    Called on `[features (batch, dim), presence (batch, 1)]` with presence 1
    (present) or 0 (absent): returns `presence * features + (1 - presence) * e`,
    where `e` is a trained "absent" vector, so the fusion sees a learned
    placeholder instead of features computed from a blank input.

    Examples:
        >>> x = ModalityMask(name="audio_absent")([audio_features, audio_mask])
    """

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.absent_embedding = self.add_weight(
            shape=(dim,), initializer=keras.initializers.RandomNormal(stddev=0.02), name="absent_embedding"
        )

    def call(self, inputs):
        features, presence = inputs
        presence = ops.cast(presence, features.dtype)
        return presence * features + (1.0 - presence) * ops.cast(self.absent_embedding, features.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="mbm_keras")
class LogMelSpectrogram(keras.layers.MelSpectrogram):
    """`keras.layers.MelSpectrogram(power_to_db=True)` whose `top_db` floor is
    set per example.

    Keras' layer floors the decibels at `max - top_db` with the max taken over
    the whole batch, so a clip's features depended on the other clips of its
    batch: a quiet clip read in a batch with a loud one lost its low bands,
    and the same clip served alone (batch 1, as TFLite and `predict` run it)
    gave other features than in training (a 0.99 cosine between a retrieval
    tower's Keras and TFLite embeddings on AV-digits). Here each example's
    floor is its own max minus `top_db`, whatever the batch.

    Args:
        **kwargs: those of `keras.layers.MelSpectrogram`.

    Examples:
        >>> mel = LogMelSpectrogram(fft_length=256, sequence_stride=80, sampling_rate=8000, power_to_db=True)
    """

    def _dbscale(self, inputs):
        numpy = self.backend.numpy
        log_spec = 10.0 * numpy.log10(numpy.maximum(inputs, self.min_power))
        ref_value = numpy.abs(self.backend.convert_to_tensor(self.ref_power))
        log_spec -= 10.0 * numpy.log10(numpy.maximum(ref_value, self.min_power))
        axes = tuple(range(1, len(log_spec.shape))) if len(log_spec.shape) == 3 else None  # (batch, mels, time)
        return numpy.maximum(log_spec, numpy.max(log_spec, axis=axes, keepdims=True) - self.top_db)


@keras.saving.register_keras_serializable(package="mbm_keras")
class ElementwiseMelSpectrogram(LogMelSpectrogram):
    """`keras.layers.MelSpectrogram` with the mel projection written as a
    broadcast multiply and a sum instead of a matrix product.

    Same result; used in TFLite exports only (see `mbm_keras.deploy.tflite`):
    quantizing converters turn the constant mel matrix of a matrix product into
    int8 weights, which zeroes the small filter weights and wrecks the log-mel
    features, while a multiply's constant operand stays float. Training keeps
    the faster matrix product.
    """

    def _melscale(self, inputs):
        matrix = self.linear_to_mel_weight_matrix(
            num_mel_bins=self.num_mel_bins,
            num_spectrogram_bins=self.backend.shape(inputs)[-1],
            sampling_rate=self.sampling_rate,
            lower_edge_hertz=self.min_freq,
            upper_edge_hertz=self.max_freq,
        )
        return ops.sum(ops.expand_dims(inputs, -1) * matrix, axis=-2)


@keras.saving.register_keras_serializable(package="mbm_keras")
def scaled_hard_swish(x):
    """hard_swish(x) = x * relu6(x + 3) / 6, written as (x / 6) * relu6(x + 3).

    Same values; the activation of int8 TFLite exports (see
    `mbm_keras.deploy.tflite`): the converter fuses the usual form into one
    HARD_SWISH op, which XNNPACK runs in float32 only, so an int8
    MobileNetV3 fell back to slow reference kernels between 20 delegate
    partitions. This form stays a MUL and an ADD+RELU6, both int8 in XNNPACK.
    """
    return (x * np.float32(1 / 6)) * ops.relu6(x + 3.0)


@keras.saving.register_keras_serializable(package="mbm_keras")
def erf_gelu(x):
    """The exact GELU written with `erf` (Keras' "gelu" computes it with
    `erfc`, an op tf2onnx does not convert); the ONNX export's activation."""
    return 0.5 * x * (1.0 + ops.erf(x * np.float32(1 / np.sqrt(2.0))))


@keras.saving.register_keras_serializable(package="mbm_keras")
class DftMelSpectrogram(LogMelSpectrogram):
    """`keras.layers.MelSpectrogram` with the short-time Fourier transform
    written as a strided convolution with the windowed DFT basis (cosine and
    sine kernels) instead of an FFT.

    Same result to float32 rounding; used in ONNX exports only (see
    `mbm_keras.deploy.onnx`): tf2onnx cannot convert the FFT's complex output
    (its `Real` and `Imag` ops), while a convolution runs on every ONNX
    runtime. Training keeps the faster FFT.
    """

    def _spectrogram(self, inputs):
        n, bins = self.fft_length, self.fft_length // 2 + 1
        length = self.sequence_length
        steps = np.arange(length)
        window = {"hann": 0.5 - 0.5 * np.cos(2 * np.pi * steps / length),
                  "hamming": 0.54 - 0.46 * np.cos(2 * np.pi * steps / length), None: np.ones(length)}[self.window]
        left = (n - length) // 2
        window = np.pad(window, (left, n - length - left))
        angle = 2 * np.pi * np.outer(np.arange(n), np.arange(bins)) / n
        kernel = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[:, None]
        padded = ops.pad(inputs, [[0, 0], [n // 2, n // 2]], mode="reflect")
        frames = ops.conv(ops.expand_dims(padded, -1), ops.convert_to_tensor(kernel[:, None, :].astype("float32")),
                          strides=self.sequence_stride, padding="valid")
        real, imag = frames[..., :bins], frames[..., bins:]
        spec = ops.sqrt(ops.add(ops.square(real), ops.square(imag)))
        return ops.power(spec, self.mag_exp)


@keras.saving.register_keras_serializable(package="mbm_keras")
class SequenceMask(keras.layers.Layer):
    """The `(batch, steps)` padding mask of an encoder's sequence, as floats:
    for int32 token ids, 1 where the id is not `padding_id` (0, or a KerasHub
    preset's own); for any other sequence, all ones (grid cells, frames and
    steps are all real).

    Examples:
        >>> mask = SequenceMask()(keras.Input((8,), dtype="int32"))   # (None, 8)
    """

    def __init__(self, padding_id=0, **kwargs):
        super().__init__(**kwargs)
        self.padding_id = int(padding_id)

    def call(self, x):
        if "int" in str(x.dtype):
            return ops.cast(ops.not_equal(x, self.padding_id), self.compute_dtype)
        return ops.ones(ops.shape(x)[:2], dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "padding_id": self.padding_id}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2])


@keras.saving.register_keras_serializable(package="mbm_keras")
class BackboneTextInputs(keras.layers.Layer):
    """int32 token ids `(batch, steps)` -> the inputs a KerasHub text backbone
    takes: `token_ids`, `padding_mask` (ids other than `padding_id`) and, when
    `segment_ids`, all-zero segment ids (one segment).

    Examples:
        >>> inputs = BackboneTextInputs(segment_ids=True)(keras.Input((8,), dtype="int32"))
    """

    def __init__(self, padding_id=0, segment_ids=False, **kwargs):
        super().__init__(**kwargs)
        self.padding_id, self.segment_ids = int(padding_id), bool(segment_ids)

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        out = {"token_ids": ids, "padding_mask": ops.cast(ops.not_equal(ids, self.padding_id), "int32")}
        if self.segment_ids:
            out["segment_ids"] = ops.zeros_like(ids)
        return out

    def get_config(self):
        return {**super().get_config(), "padding_id": self.padding_id, "segment_ids": self.segment_ids}


@keras.saving.register_keras_serializable(package="mbm_keras")
class MaskedMean(keras.layers.Layer):
    """`[sequence (batch, steps, dim), mask (batch, steps)]` -> the mean of the
    unmasked steps `(batch, dim)` (zeros where every step is masked).

    Examples:
        >>> pooled = MaskedMean()([keras.Input((8, 16)), keras.Input((8,))])
    """

    def call(self, inputs):
        sequence, mask = inputs
        mask = ops.cast(mask, sequence.dtype)[..., None]
        return ops.sum(sequence * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], input_shapes[0][2])


@keras.saving.register_keras_serializable(package="mbm_keras")
class MaskByPresence(keras.layers.Layer):
    """`[mask (batch, steps), presence (batch, 1)]` -> `mask * presence`: an absent
    feature's tokens are all masked out of a sequence fusion.

    Examples:
        >>> mask = MaskByPresence()([keras.Input((8,)), keras.Input((1,))])
    """

    def call(self, inputs):
        mask, presence = inputs
        return mask * ops.cast(presence, mask.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="mbm_keras")
class TanhGate(keras.layers.Layer):
    """`x * tanh(alpha)` with one learned `alpha` starting at 0 (Flamingo's
    gated cross-attention): a branch added to a residual path contributes
    nothing at first and only as much as training finds it helps. The
    transcription model adds its context this way, so the audio path learns
    first and a context it can memorize does not take over.

    Examples:
        >>> frames = keras.layers.Add()([frames, TanhGate()(context_frames)])
    """

    def build(self, input_shape):
        self.alpha = self.add_weight(shape=(), initializer="zeros", name="alpha")

    def call(self, x):
        return x * ops.cast(ops.tanh(self.alpha), x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="mbm_keras")
class SpecAugment(keras.layers.Layer):
    """SpecAugment's masking (Park et al., 2019) of `(batch, frames, bands)`
    features, in training only: per example, `time_masks` spans of up to
    `max_time` frames and `band_masks` spans of up to `max_bands` bands are set
    to the example's mean. An identity at inference (and in exports).

    Args:
        time_masks, max_time: masked time spans per example and their longest.
        band_masks, max_bands: masked band spans per example and their widest.
        seed: the masks' seed.

    Examples:
        >>> frames = SpecAugment(time_masks=2, max_time=10)(frames)
    """

    def __init__(self, time_masks=2, max_time=10, band_masks=2, max_bands=5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.time_masks, self.max_time = int(time_masks), int(max_time)
        self.band_masks, self.max_bands = int(band_masks), int(max_bands)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def _spans(self, batch, size, count, longest):
        """`(batch, size)` 1.0 where no span covers the position."""
        positions = ops.arange(size, dtype="float32")[None, :]
        keep = ops.ones((batch, size))
        for _ in range(count):
            width = ops.floor(keras.random.uniform((batch, 1), 0, longest + 1, seed=self.generator))
            start = ops.floor(keras.random.uniform((batch, 1), 0, 1, seed=self.generator) * (size - width + 1))
            covered = ops.logical_and(positions >= start, positions < start + width)
            keep = keep * (1.0 - ops.cast(covered, "float32"))
        return keep

    def call(self, x, training=None):
        if not training:
            return x
        batch, frames, bands = ops.shape(x)[0], x.shape[1], x.shape[2]
        keep = (self._spans(batch, frames, self.time_masks, self.max_time)[:, :, None]
                * self._spans(batch, bands, self.band_masks, self.max_bands)[:, None, :])
        keep = ops.cast(keep, x.dtype)
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        return x * keep + mean * (1 - keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "time_masks": self.time_masks, "max_time": self.max_time,
                "band_masks": self.band_masks, "max_bands": self.max_bands, "seed": self.seed}
