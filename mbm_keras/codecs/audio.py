"""Audio: WAV decoded in-graph, FLAC/OGG on the host with soundfile; mono,
resampled to the model's rate, padded or cropped to a fixed length."""

import numpy as np
import tensorflow as tf

from mbm_keras.codecs.asserts import check

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


def wav_info(path):
    """`(format tag, bits per sample, seconds)` of a WAV file (a path or a
    binary file object) from its chunk
    headers (read on the host, nothing decoded); None where a chunk is missing.

    Examples:
        >>> wav_info("clip.wav")
        (1, 16, 0.25)
    """
    import struct

    import contextlib
    import os

    fmt, seconds = None, None
    with (open(path, "rb") if isinstance(path, (str, bytes, os.PathLike)) else contextlib.nullcontext(path)) as f:
        f.seek(0)
        if f.read(12)[8:12] != b"WAVE":
            return None
        while True:
            header = f.read(8)
            if len(header) < 8:
                break
            name, size = header[:4], struct.unpack("<I", header[4:])[0]
            if name == b"fmt ":
                body = f.read(size)
                if len(body) < 16:
                    return None
                tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
                fmt = (tag, bits, rate, block_align)
                f.seek(size % 2, 1)
            elif name == b"data":
                if fmt is not None and fmt[2] and fmt[3]:
                    seconds = size / fmt[3] / fmt[2]
                break
            else:
                f.seek(size + size % 2, 1)
    return None if fmt is None else (fmt[0], fmt[1], seconds)


# The 36-byte canonical WAV header: "RIFF" ? "WAVE" "fmt " ? tag=1 ? ? ? bits=16, as (position, byte).
_WAV_PATTERN = [(i, c) for i, c in enumerate(b"RIFF")] + [(8 + i, c) for i, c in enumerate(b"WAVEfmt ")] + [
    (20, 1), (21, 0), (34, 16), (35, 0)]
_WAV_POSITIONS = np.array([i for i, _ in _WAV_PATTERN], np.int32)
_WAV_BYTES = np.array([c for _, c in _WAV_PATTERN], np.uint8)


def decode_wav(contents, check_header=True):
    """WAV bytes -> (float32 mono samples, int32 rate). Bytes that are not a
    WAV file, or a WAV that is not 16-bit PCM, fail with a message that says so
    and never carries the raw bytes (TensorFlow's own would, and Python cannot
    print them). A few ops on the first 36 bytes; messages are formatted only
    on failure. A WAV whose "fmt " chunk is not first is left to decode_wav.
    `check_header=False` where the host already checked it (`make_dataset`
    with verify="header" or "decode", see `wav_info`): the checks cost about a
    third of a short clip's decoding."""
    if not check_header:
        audio, rate = tf.audio.decode_wav(contents)
        return tf.reduce_mean(audio, axis=1), tf.cast(rate, tf.int32)
    b = tf.io.decode_raw(tf.strings.substr(contents, 0, 36), tf.uint8, fixed_length=36)
    ok = tf.equal(tf.gather(b, _WAV_POSITIONS), _WAV_BYTES)
    is_wav = tf.reduce_all(ok[:8])
    pcm16 = tf.reduce_all(ok) | ~tf.reduce_all(ok[8:12])  # fmt chunk first, then tag 1 and 16 bits
    b = tf.cast(b, tf.int32)
    checks = [
        check(is_wav, ["input audio must hold WAV file bytes (no RIFF/WAVE header found); 16-bit PCM WAV is read"]),
        check(pcm16, ["a ", b[34] + 256 * b[35], "-bit WAV file (format tag ", b[20] + 256 * b[21],
                      ", 1 = PCM, 3 = float): " + WAV_FORMAT_NOTE]),
    ]
    with tf.control_dependencies(checks):
        audio, rate = tf.audio.decode_wav(tf.identity(contents))
    return tf.reduce_mean(audio, axis=1), tf.cast(rate, tf.int32)


def check_duration(samples, rate, max_seconds):
    """Asserts that `samples` at `rate` last at most `max_seconds`; returns `samples`."""
    seconds = tf.cast(tf.shape(samples)[0], tf.float64) / tf.cast(rate, tf.float64)
    note = f" s is longer than max_audio_seconds={max_seconds:g} (data.preprocessing.max_audio_seconds)"
    with tf.control_dependencies([check(seconds <= max_seconds, ["audio of ", seconds, note])]):
        return tf.identity(samples)


def check_length(samples, length, rate):
    """Asserts that `samples` (at the model's `rate`) fit in `length`; returns `samples`."""
    note = (f" s is longer than audio_length={length} samples ({length / rate:g} s), and the whole clip is needed "
            f"(its transcript); raise data.preprocessing.audio_length")
    seconds = tf.cast(tf.shape(samples)[0], tf.float64) / rate
    with tf.control_dependencies([check(tf.shape(samples)[0] <= length, ["audio of ", seconds, note])]):
        return tf.identity(samples)


def decode_audio(contents, max_seconds=None, header_checked=False):
    """Audio file bytes -> (float32 mono samples in [-1, 1], int32 sample rate).

    16-bit PCM WAV is decoded in-graph; FLAC and OGG on the host (soundfile).
    With `max_seconds`, longer audio is refused (compressed files before
    decoding). `header_checked`: a WAV's format and duration were checked on
    the host from its header (`wav_info`), so the graph does not repeat it.
    """
    is_wav = tf.equal(tf.strings.substr(contents, 0, 4), WAV_MAGIC)

    def wav():
        samples, rate = decode_wav(contents, check_header=not header_checked)
        if max_seconds and not header_checked:
            samples = check_duration(samples, rate, max_seconds)
        return samples, rate

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
