"""Audio: WAV decoded in-graph, FLAC/OGG on the host with soundfile; mono,
resampled to the model's rate, padded or cropped to a fixed length."""

import numpy as np
import tensorflow as tf

WAV_MAGIC = b"RIFF"
# Formats read on the host by soundfile (libsndfile).
HOST_DECODED = {b"fLaC": "FLAC", b"OggS": "OGG"}


def _soundfile():
    try:
        import soundfile
    except ImportError:
        raise ImportError(
            "Decoding FLAC/OGG audio needs soundfile: pip install 'mbm_keras[audio]' (or pip install soundfile)"
        ) from None
    return soundfile


def _host_decode(contents):
    import io

    data, rate = _soundfile().read(io.BytesIO(contents), dtype="float32", always_2d=True)
    return data.mean(axis=1).astype(np.float32), np.int32(rate)


def decode_audio(contents):
    """Audio file bytes -> (float32 mono samples in [-1, 1], int32 sample rate)."""
    is_wav = tf.equal(tf.strings.substr(contents, 0, 4), WAV_MAGIC)

    def wav():
        audio, rate = tf.audio.decode_wav(contents)
        return tf.reduce_mean(audio, axis=1), tf.cast(rate, tf.int32)

    def other():
        samples, rate = tf.numpy_function(_host_decode, [contents], [tf.float32, tf.int32], stateful=False)
        samples.set_shape([None])
        rate.set_shape([])
        return samples, rate

    return tf.cond(is_wav, wav, other)


def resample(samples, rate, target_rate):
    """Linear-interpolation resampling of 1-D `samples` from `rate` to `target_rate`.

    Good for speech-band content; it does not low-pass before downsampling, so
    energy above the new Nyquist frequency aliases.
    """
    rate = tf.cast(rate, tf.float64)
    n = tf.shape(samples)[0]
    new_n = tf.cast(tf.math.ceil(tf.cast(n, tf.float64) * target_rate / rate), tf.int32)
    pos = tf.cast(tf.range(new_n), tf.float64) * rate / target_rate
    lo = tf.minimum(tf.cast(tf.floor(pos), tf.int32), n - 1)
    hi = tf.minimum(lo + 1, n - 1)
    frac = tf.cast(pos - tf.floor(pos), tf.float32)
    out = tf.gather(samples, lo) * (1 - frac) + tf.gather(samples, hi) * frac
    return tf.cond(tf.equal(rate, target_rate), lambda: samples, lambda: out)


def fix_length(samples, length, seed=None):
    """Pads with zeros or crops to `length` samples: the start when `seed` is
    None, a random window (stateless, from `seed`) otherwise."""
    n = tf.shape(samples)[0]
    samples = tf.pad(samples, [[0, tf.maximum(length - n, 0)]])
    excess = tf.maximum(n - length, 0)
    if seed is None:
        start = 0
    else:
        start = tf.random.stateless_uniform([], seed, 0, excess + 1, dtype=tf.int32)
    samples = samples[start : start + length]
    samples.set_shape([length])
    return samples


def load_audio(contents, sample_rate, length, seed=None):
    """Bytes -> float32 `(length,)` mono at `sample_rate`."""
    samples, rate = decode_audio(contents)
    return fix_length(resample(samples, rate, float(sample_rate)), length, seed)
