"""`transcribe()`: the transcript of one clip from a transcription run folder,
its SavedModel or its TFLite export (`mbm-keras transcribe`)."""

import json
import os

import numpy as np

from mbm_keras.deploy.transcription_export import _model_inputs, _tflite_runner


def transcribe(model, audio, context=None, beam=None, candidates=None):
    """The transcript of one clip.

    Args:
        model: a transcription run folder (or its `model.keras`), a SavedModel
            export folder, or a TFLite export (its folder or `model.tflite`).
        audio: the WAV (or FLAC/OGG) file.
        context: the context text (None or "": no context).
        beam: beam-search width (None: greedy).
        candidates: None, or the transcripts the clip may say (a contact list,
            numbers on screen): the one the model finds likeliest is returned
            (`transcription.choose_candidates`, CTC log-likelihood), instead of
            a free transcript. A candidate the model cannot spell (no character
            in its vocabulary) or that is too long for the clip is named on
            stderr; when no candidate can be aligned, ValueError.

    Returns:
        The transcript.

    Raises:
        ValueError: naming the clip and the reason (not a WAV, a format that
            is not 16-bit PCM, longer than the model's `audio_length`, no
            samples), or the option (`beam`, `candidates`).

    Examples:
        >>> transcribe("runs/digits", "call.wav", context="three seven one , two nine four")
        >>> transcribe("runs/digits", "call.wav", candidates=["three seven one", "two nine four"])
    """
    from mbm_keras.transcription import choose_candidates, decode

    if beam is not None and (isinstance(beam, bool) or not isinstance(beam, (int, np.integer)) or beam < 1):
        raise ValueError(f"beam must be a positive int (the beam width) or None for greedy decoding. Received: "
                         f"beam={beam!r}")
    if candidates is not None:
        candidates = _check_candidates(candidates)
    _check_clip(audio)
    log_probs, vocabulary = _log_probs(model, audio, context)
    if candidates:
        _check_alignable(candidates, log_probs, vocabulary)
        return choose_candidates(log_probs, [candidates], vocabulary)[0]
    return decode(log_probs, vocabulary, beam=beam)[0]


def _check_candidates(candidates):
    if isinstance(candidates, str):
        raise ValueError(f"candidates must be a list of strings, not one string {candidates!r}")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates is empty: give at least one transcript the clip may say, or None for a free "
                         "transcript")
    for i, text in enumerate(candidates):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"candidate {i + 1} is {text!r}: each candidate must be a non-empty text")
    return candidates


def _check_clip(audio):
    """The clip exists and, for a WAV, holds samples (from its header; the decoder checks the rest)."""
    from mbm_keras.codecs.audio import wav_info

    if not os.path.isfile(audio):
        raise FileNotFoundError(f"Audio file not found: {audio}")
    if os.path.getsize(audio) == 0:
        raise ValueError(f"{audio}: the file is empty")
    with open(audio, "rb") as f:
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return  # FLAC/OGG (soundfile) or not audio at all: the decoder says which
    info = wav_info(audio)
    if info is None or info[2] is None:
        raise ValueError(f"{audio}: a damaged WAV file (its fmt or data chunk is missing or cut short)")
    if info[2] == 0:
        raise ValueError(f"{audio}: the WAV file holds no samples (an empty recording)")


def _check_alignable(candidates, log_probs, vocabulary):
    """Says on stderr which candidates can never be chosen; refuses a list of which none can."""
    import sys

    from mbm_keras.codecs.vocabulary import UNKNOWN, min_frames

    frames, usable = log_probs.shape[1], 0
    for text in candidates:
        ids = vocabulary.encode(text)
        needed = min_frames(ids)
        if ids and all(i == UNKNOWN for i in ids):
            print(f"transcribe: candidate {text!r} has no character the model knows (its vocabulary: "
                  f"{''.join(vocabulary.symbols)!r}); it cannot be chosen", file=sys.stderr)
        elif needed > frames:
            print(f"transcribe: candidate {text!r} needs {needed} frames and the clip has {frames} "
                  f"(the model's audio_length); it cannot be chosen", file=sys.stderr)
        else:
            usable += 1
    if not usable:
        raise ValueError(f"none of the {len(candidates)} candidate(s) can be aligned with the clip (see above)")


def _log_probs(model, audio, context):
    """`(log_probs (1, frames, classes), Vocabulary)` of one clip through a run, SavedModel or TFLite export."""
    from mbm_keras.run import artifact_kind

    path = os.path.abspath(model)
    kind = artifact_kind(path)
    if kind == "onnx":
        raise ValueError(f"{model} is an ONNX export; transcription models export to saved_model or tflite")
    if kind == "saved_model":
        return _saved_model_log_probs(model, path, audio, context)
    if kind == "keras":
        from mbm_keras.deploy.exporting import load_run_model

        keras_model, pre = load_run_model(path)
        names, run = [t.name for t in keras_model.inputs], (lambda x: keras_model.predict(x, verbose=0))
    else:
        from mbm_keras.data import Preprocessor
        from mbm_keras.deploy.tflite import tflite_interpreter

        tflite_file = path if path.endswith(".tflite") else os.path.join(path, "model.tflite")
        pre = Preprocessor.load(os.path.dirname(tflite_file))
        names = list(tflite_interpreter(tflite_file).get_signature_runner().get_input_details())
        run = _tflite_runner(tflite_file)
    if pre.labels is None or pre.labels.label_type != "transcript":
        raise ValueError(f"{model} is not a transcription model (its labels are "
                         f"{pre.labels.label_type if pre.labels else 'none'}); use mbm-keras predict")
    return np.asarray(run(_preprocessed(model, pre, names, audio, context)), np.float32), pre.labels.vocabulary


def _preprocessed(model, pre, names, audio, context):
    """The model's inputs for one clip (and context) through each feature's serving path."""
    import tensorflow as tf

    from mbm_keras.deploy.predicting import _run

    audio_name = next(n for n in names if pre.feature_modalities.get(n) == "audio")
    context_name = next((n for n in names if pre.feature_modalities.get(n) == "text"), None)
    if context and not context_name:
        raise ValueError(f"{model} was trained without a text context; transcribe it without --context")
    raw = {name: tf.constant([feature.raw_example(audio if name == audio_name else (context or None), name,
                                                  feature.raw_spec().shape, feature.columns())])
           for name, feature in pre.features.items()}
    used = [n for n in (audio_name, context_name) if n]
    return _named(audio, lambda: {k: v.numpy() for k, v in
                                  _run(lambda **r: _model_inputs(r, pre, used, context_name), raw).items()})


def _saved_model_log_probs(model, path, audio, context):
    import tensorflow as tf

    from mbm_keras.deploy.predicting import _run
    from mbm_keras.transcription import Vocabulary

    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"]
    if not hasattr(loaded, "vocabulary_symbols") or "log_probs" not in served.structured_outputs:
        raise ValueError(f"{model} is not a transcription export, or one from before candidate scoring existed "
                         f"(export the run again: mbm-keras export --format saved_model)")
    modalities = json.loads(loaded.feature_modalities.numpy())
    names = list(served.structured_input_signature[1])
    if context and not any(modalities.get(n) == "text" for n in names):
        raise ValueError(f"{model} was trained without a text context; transcribe it without --context")
    with open(audio, "rb") as f:
        clip = f.read()
    raw = {n: tf.constant([clip if modalities.get(n) == "audio" else (context or "")]) for n in names}
    log_probs = _named(audio, lambda: _run(served, raw)["log_probs"].numpy())
    return log_probs, Vocabulary(json.loads(loaded.vocabulary_symbols.numpy()))


def _named(audio, function):
    """`function()`, its input errors (one line, from `predicting._run`) prefixed with the clip's path."""
    try:
        return function()
    except ValueError as e:
        raise ValueError(f"{audio}: {e}") from None
