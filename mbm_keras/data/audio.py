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


def _host_decode(contents, max_seconds):
    import io

    soundfile = _soundfile()
    info = soundfile.info(io.BytesIO(contents))
    if max_seconds and info.frames > max_seconds * info.samplerate:
        raise ValueError(f"audio of {info.frames / info.samplerate:.1f} s is longer than "
                         f"max_audio_seconds={max_seconds:g} (data.preprocessing.max_audio_seconds)")
    data, rate = soundfile.read(io.BytesIO(contents), dtype="float32", always_2d=True)
    return data.mean(axis=1).astype(np.float32), np.int32(rate)


WAV_FORMAT_NOTE = ("only 16-bit PCM WAV is read (TensorFlow's decode_wav, the decoder the exported SavedModel carries); "
                   "convert it, e.g. `sox in.wav -b 16 out.wav`")


def wav_format(head):
    """`(format tag, bits per sample)` from the first 36 bytes of a WAV file
    whose "fmt " chunk comes first (as nearly all do), else None."""
    if len(head) < 36 or head[:4] != WAV_MAGIC or head[8:12] != b"WAVE" or head[12:16] != b"fmt ":
        return None
    return int.from_bytes(head[20:22], "little"), int.from_bytes(head[34:36], "little")


def decode_wav(contents):
    """WAV bytes -> (float32 mono samples, int32 rate), with errors that say
    what is wrong (and never carry the raw bytes): not a WAV file, or not 16-bit PCM."""
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(contents, 0, 36), "\0" * 36]), 0, 36)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int32)
    is_wav = tf.equal(tf.strings.substr(contents, 0, 4), WAV_MAGIC) & tf.equal(tf.strings.substr(contents, 8, 4), b"WAVE")
    fmt_first = tf.equal(tf.strings.substr(head, 12, 4), b"fmt ")
    tag, bits = b[20] + 256 * b[21], b[34] + 256 * b[35]
    pcm16 = ~fmt_first | (tag == 1) & (bits == 16)
    kind = tf.where(tag == 1, "PCM", tf.where(tag == 3, "float", tf.strings.join(["format-", tf.strings.as_string(tag)])))
    message = tf.strings.join(["a ", tf.strings.as_string(bits), "-bit ", kind, " WAV file: ", WAV_FORMAT_NOTE])
    checks = [
        tf.debugging.Assert(is_wav, ["input audio must hold WAV file bytes (no RIFF/WAVE header found); 16-bit PCM WAV is read"]),
        tf.debugging.Assert(pcm16, [message]),
    ]
    with tf.control_dependencies(checks):
        audio, rate = tf.audio.decode_wav(tf.identity(contents))
    return tf.reduce_mean(audio, axis=1), tf.cast(rate, tf.int32)


def check_duration(samples, rate, max_seconds):
    """Asserts that `samples` at `rate` last at most `max_seconds`; returns `samples`."""
    seconds = tf.cast(tf.shape(samples)[0], tf.float64) / tf.cast(rate, tf.float64)
    message = tf.strings.join([
        "audio of ", tf.strings.as_string(seconds, precision=1),
        f" s is longer than max_audio_seconds={max_seconds:g} (data.preprocessing.max_audio_seconds)"])
    with tf.control_dependencies([tf.debugging.Assert(seconds <= max_seconds, [message])]):
        return tf.identity(samples)


def decode_audio(contents, max_seconds=None):
    """Audio file bytes -> (float32 mono samples in [-1, 1], int32 sample rate).

    16-bit PCM WAV is decoded in-graph; FLAC and OGG on the host (soundfile).
    With `max_seconds`, longer audio is refused (compressed files before decoding).
    """
    is_wav = tf.equal(tf.strings.substr(contents, 0, 4), WAV_MAGIC)

    def wav():
        samples, rate = decode_wav(contents)
        return (check_duration(samples, rate, max_seconds) if max_seconds else samples), rate

    def other():
        samples, rate = tf.numpy_function(_host_decode, [contents, float(max_seconds or 0)], [tf.float32, tf.int32],
                                          stateful=False)
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


def load_audio(contents, sample_rate, length, seed=None, max_seconds=None):
    """Bytes -> float32 `(length,)` mono at `sample_rate`."""
    samples, rate = decode_audio(contents, max_seconds)
    return fix_length(resample(samples, rate, float(sample_rate)), length, seed)
