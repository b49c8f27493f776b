"""Audio: WAV (in-graph), FLAC/OGG (host) files -> mono float32 at the model's rate, fixed length."""

import numpy as np

from mbm_keras.modalities.base import Modality, positive_int, positive_number, register_modality

MAX_AUDIO_SECONDS = 600.0


@register_modality
class Audio(Modality):
    """An audio file per row; the model input is float32 mono `(audio_length,)` in [-1, 1]."""

    name = "audio"
    description = "WAV/FLAC/OGG files -> float32 mono waveform (audio_length,) at sample_rate"
    file_based = True
    OPTIONS = {
        "sample_rate": (16000, positive_int, "a positive int (Hz)"),
        "audio_length": (16000, positive_int, "a positive int (samples)"),
        "max_audio_seconds": (MAX_AUDIO_SECONDS, positive_number, "a positive finite number"),
        # True (task: transcription sets it): the whole clip is the input, never a window of it; a clip
        # longer than audio_length is a row error, since its transcript would lose words.
        "audio_whole_clip": (False, lambda v: isinstance(v, bool), "true or false"),
    }
    MODEL_OPTIONS = {"audio_length": 16000, "sample_rate": 16000}
    TINY = {"audio_length": 2000, "sample_rate": 8000}
    ZOO = {"audio_length": 16000, "sample_rate": 16000}
    EXTENSIONS = (".wav", ".flac", ".ogg")
    STARTER = "logmel_cnn"

    def __init__(self, feature, column, options):
        super().__init__(feature, column, options)
        self.options.update(sample_rate=int(self.options["sample_rate"]), audio_length=int(self.options["audio_length"]),
                            max_audio_seconds=float(self.options["max_audio_seconds"]),
                            audio_whole_clip=bool(self.options["audio_whole_clip"]))

    def model_options(self):
        return {"audio_length": self.options["audio_length"], "sample_rate": self.options["sample_rate"]}

    @classmethod
    def input_spec(cls, options):
        return (options["audio_length"],), "float32"

    @classmethod
    def encoder_kwargs(cls, options):
        return {"sample_rate": options["sample_rate"]}

    def check_file(self, f):
        from mbm_keras.codecs.audio import HOST_DECODED, WAV_FORMAT_NOTE, WAV_MAGIC, wav_info

        head = f.read(12)
        limit = self.options["max_audio_seconds"]
        too_long = f"longer than max_audio_seconds={limit:g} (data.preprocessing.max_audio_seconds)"
        if head.startswith(WAV_MAGIC):
            if head[8:12] != b"WAVE":
                return "a RIFF file that is not WAV"
            info = wav_info(f)
            if info is None:
                return "a WAV file without a readable fmt chunk"
            tag, bits, seconds = info
            if (tag, bits) != (1, 16):
                return f"a {bits}-bit WAV file (format tag {tag}, 1 = PCM, 3 = float): {WAV_FORMAT_NOTE}"
            if seconds is not None and seconds > limit:
                return f"audio of {seconds:.1f} s is {too_long}"
            return None
        fmt = HOST_DECODED.get(head[:4])
        if fmt is None:
            return "not a WAV, FLAC or OGG file"
        try:
            import soundfile
        except ImportError:
            return f"a {fmt} file, which needs soundfile: pip install soundfile"
        try:
            info = soundfile.info(f.name)
        except RuntimeError as e:
            return f"cannot read the {fmt} header ({e})"
        if info.frames > limit * info.samplerate:
            return f"audio of {info.frames / info.samplerate:.1f} s is {too_long}"
        return None

    def decoded_spec(self):
        import tensorflow as tf

        return tf.TensorSpec([None], tf.float32)

    def finished_shape(self):
        return [self.options["audio_length"]]

    def decode(self, raw, header_checked=False, serving=False):
        """Full-length mono samples at the model's rate (`finish` cuts them).
        Serving reads 16-bit PCM WAV only (decode_wav, which a SavedModel can
        carry); the pipeline also reads FLAC/OGG on the host."""
        from mbm_keras.codecs.audio import check_duration, check_length, decode_audio, decode_wav, resample

        if serving:
            samples, rate = decode_wav(raw)
            samples = check_duration(samples, rate, self.options["max_audio_seconds"])
        else:
            samples, rate = decode_audio(raw, max_seconds=self.options["max_audio_seconds"],
                                         header_checked=header_checked)
        samples = resample(samples, rate, float(self.options["sample_rate"]))
        if self.options["audio_whole_clip"]:
            samples = check_length(samples, self.options["audio_length"], self.options["sample_rate"])
        return samples

    def empty(self):
        import tensorflow as tf

        return tf.zeros((self.options["audio_length"],), tf.float32)

    def finish(self, x, seed=None, augment=None):
        """Pads or cuts to `audio_length`: the start, or a random window in
        training (never under audio_whole_clip)."""
        from mbm_keras.codecs.audio import fix_length

        return fix_length(x, self.options["audio_length"], None if self.options["audio_whole_clip"] else seed)

    def sidecar(self):
        return {"sample_rate": self.options["sample_rate"], "length": self.options["audio_length"],
                "channels": "mono (mean of channels)", "range": [-1, 1],
                "note": "resample, then pad with zeros or keep the first `length` samples; log-mel is in the model"}

    @staticmethod
    def perturb(x, level, rng):
        """Gaussian noise at 3 * `level` times each clip's RMS."""
        rms = np.sqrt(np.mean(x**2, axis=-1, keepdims=True)) + 1e-6
        return (x + rng.normal(0, 1, x.shape) * rms * 3 * level).astype(x.dtype)
