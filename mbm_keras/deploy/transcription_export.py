"""The exports of a transcription run (`transcribe()` reads them: `deploy/transcribing.py`).

- SavedModel: `serving_default` takes the raw inputs (WAV bytes, the context
  string; an empty string is no context) and returns `transcript` (greedy,
  decoded in the graph) and `log_probs`; `serve_tensors` takes the
  preprocessed tensors.
- TFLite (builtin ops; float, float16, dynamic or int8): preprocessed inputs
  in, per-frame `log_probs` out; `model.json` holds the vocabulary and the
  preprocessing, `ctc_decoder.py` the greedy decoder in plain Python.
"""

import json
import os
import shutil

import numpy as np

from mbm_keras.deploy.formats import copy_tokenizer


def transcription_features(model, pre):
    """`(audio feature, context feature or None)` of a transcription model."""
    from mbm_keras.transcription.model import transcription_roles

    return transcription_roles(model, pre)


def greedy_strings(log_probs, symbols):
    """Greedy CTC transcripts of a `(batch, frames, classes)` tensor, in the graph."""
    import tensorflow as tf

    table = tf.constant(["", "?"] + list(symbols))
    best = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    previous = tf.pad(best[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
    ids = tf.ragged.boolean_mask(best, (best != previous) & (best != 0))
    return tf.strings.reduce_join(tf.gather(table, ids), axis=-1)


def _model_inputs(raw, pre, names, context):
    """The model's inputs from raw ones through each feature's serving path; an
    empty context is allowed (it is the "no context" input)."""
    from mbm_keras.deploy.raw_inputs import raw_to_inputs

    inputs = raw_to_inputs(raw, pre, names + ([f"{context}_mask"] if context else []))
    return {k: v for k, v in inputs.items() if k in names}


def serving_functions(model, pre):
    """`{"serving_default": (function of raw inputs -> transcript and log_probs, its input signature, pre)}`: what
    the SavedModel holds and what `mbm-keras serve` runs on a run folder."""
    from mbm_keras.deploy.raw_inputs import raw_signature

    audio, context = transcription_features(model, pre)
    names = [n for n in (audio, context) if n]
    symbols = list(pre.labels.classes)
    signature = {k: v for k, v in raw_signature(pre).items() if k in names}

    def serve_raw(raw):
        log_probs = model(_model_inputs(raw, pre, names, context), training=False)
        return {"transcript": greedy_strings(log_probs, symbols), "log_probs": log_probs}

    return {"serving_default": (serve_raw, signature, pre)}


def export_saved_model(model, pre, path):
    """The raw-input SavedModel of a transcription model."""
    import keras
    import tensorflow as tf

    from mbm_keras.deploy.saved_model import tensor_signature

    symbols = list(pre.labels.classes)
    archive = keras.export.ExportArchive()
    archive.track(model)
    resources = [t for f in pre.features.values() for t in getattr(f, "trackables", list)()]
    archive._tf_trackable.preprocessing_resources = resources
    archive._tf_trackable.feature_modalities = tf.Variable(json.dumps(pre.feature_modalities), trainable=False)
    # The output alphabet (ids 2..), for scoring candidate transcripts against `log_probs`.
    archive._tf_trackable.vocabulary_symbols = tf.Variable(json.dumps(symbols), trainable=False)
    serve_raw, signature, _ = serving_functions(model, pre)["serving_default"]

    def serve_tensors(inputs):
        log_probs = model(inputs, training=False)
        return {"transcript": greedy_strings(log_probs, symbols), "log_probs": log_probs}

    archive.add_endpoint("serving_default", serve_raw, input_signature=[signature])
    archive.add_endpoint("serve_tensors", serve_tensors, input_signature=[tensor_signature(model)])
    archive.write_out(path, verbose=False)
    return os.path.abspath(path)


def example_inputs(model, pre, manifest, count, allow_outside_root=False):
    """Up to `count` preprocessed examples of `manifest` (an empty context allowed)."""
    from mbm_keras.data import make_dataset

    audio, context = transcription_features(model, pre)
    pre.labels.max_frames = int(model.output.shape[1])
    ds = make_dataset(manifest, preprocessor=pre, batch_size=count, missing_modalities=[context] if context else False,
                      verbose=False, allow_outside_root=allow_outside_root, on_error="skip")
    x, _ = next(iter(ds))
    return {k: x[k].numpy() for k in (audio, context) if k}


def export_transcription(model, pre, format, tmp, quantize, examples, say):
    """Writes the export of a transcription model into `tmp`; returns
    `(model file, check)`: the check compares greedy transcripts (and, float,
    the log-probabilities) with Keras on `examples`."""
    from mbm_keras.deploy.tflite import convert_to_tflite, representative_examples, sidecar, tflite_interpreter
    from mbm_keras.io import write_json
    from mbm_keras.transcription import greedy_decode

    vocab = pre.labels.vocabulary
    if format == "onnx":
        raise NotImplementedError("ONNX export of transcription models is not supported yet; export saved_model or "
                                  "tflite")
    if format == "saved_model":
        export_saved_model(model, pre, tmp)
        model_file = os.path.join(tmp, "saved_model.pb")
        runner = _saved_model_runner(tmp)
    else:
        model_file = os.path.join(tmp, "model.tflite")
        say(f"Converting to TFLite (quantize={quantize}) ...", flush=True)
        convert_to_tflite(model, model_file, quantize, representative=representative_examples(examples))
        interpreter = tflite_interpreter(model_file)
        info = sidecar(model, pre, interpreter, quantize)
        info["output"] = {"name": "log_probs", "meaning": "per-frame log-probabilities over `vocabulary`; decode "
                                                          "with ctc_decoder.greedy_decode"}
        info["vocabulary"] = ["<blank>", "<unk>"] + list(vocab.symbols)
        info["labels"] = None
        write_json(os.path.join(tmp, "model.json"), info)
        copy_tokenizer(tmp)
        shutil.copy(os.path.join(os.path.dirname(__file__), "ctc_decoder.py"), os.path.join(tmp, "ctc_decoder.py"))
        runner = _tflite_runner(model_file)
    check = None
    if examples is not None:
        expected = np.asarray(model.predict(examples, verbose=0))
        got = np.stack([runner({k: v[i:i + 1] for k, v in examples.items()})[0]
                        for i in range(len(expected))])
        keras_texts = [greedy_decode(e, vocab) for e in expected]
        export_texts = [greedy_decode(g, vocab) for g in got]
        check = {"examples": len(expected), "max_abs_diff": float(np.max(np.abs(expected - got))),
                 "identical_transcripts": float(np.mean([a == b for a, b in zip(keras_texts, export_texts)]))}
        say(f"Checked against Keras on {check['examples']} examples: identical greedy transcripts "
            f"{100 * check['identical_transcripts']:.1f}%, max |diff| of log-probabilities {check['max_abs_diff']:.2e}")
    return model_file, check


def _saved_model_runner(folder):
    import tensorflow as tf

    served = tf.saved_model.load(folder).signatures["serve_tensors"]
    return lambda x: np.asarray(served(**{k: tf.constant(v) for k, v in x.items()})["log_probs"])


def _tflite_runner(path):
    from mbm_keras.deploy.tflite import tflite_interpreter

    runner = tflite_interpreter(path).get_signature_runner()
    names = runner.get_input_details()
    return lambda x: np.asarray(next(iter(runner(**{k: v.astype(names[k]["dtype"]) for k, v in x.items()}).values())))
