"""Shared checks, one call per test (KerasHub's run_*_test style)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from mbm_keras import build_fusion_model


def build_tiny(encoders, **kwargs):
    from conftest import TINY

    keras.utils.set_random_seed(0)
    return build_fusion_model(**encoders, **{**TINY, **kwargs})


def all_layers(model):
    """Every layer, nested models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def run_model_checks(model, inputs, labels, tmp_path, num_classes):
    """Shapes, input names, no NaN, no Lambda, .keras round trip, one fit step lowers the loss."""
    # Shapes, input names, no NaN. Called eagerly, in inference mode: predict's tf.function would be traced for
    # each model (about a second each); the graph is traced by the training step below and by every trained test.
    assert set(model.input.keys()) == set(inputs.keys())
    outputs = keras.ops.convert_to_numpy(model(inputs, training=False))
    assert outputs.shape == (len(labels), num_classes)
    assert np.all(np.isfinite(outputs))
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in all_layers(model))
    names = [layer.name for layer in model.layers]
    for modality in inputs:
        assert names.index(f"{modality}_encoder") < names.index("fusion") < names.index("predictions")

    # .keras round trip with the default safe_mode=True.
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(inputs, training=False)), outputs)

    # One training step lowers the loss on that batch. Measured in training
    # mode (BatchNorm on batch statistics) with the random state and moving
    # statistics restored around each call, so dropout and stochastic depth
    # draw the same masks every time. The step is plain gradient descent of
    # length 1e-4: randomly initialized deep backbones at 32x32 have gradient
    # norms in the thousands, and a fixed learning rate overshoots them.
    assert_one_step_lowers_loss(model, inputs, labels)


def assert_one_step_lowers_loss(model, inputs, labels):
    loss_fn = model.loss
    model.compile(optimizer=keras.optimizers.SGD(1.0, global_clipnorm=1e-4), loss=loss_fn)
    state = [v.numpy() for v in model.non_trainable_variables]

    def restore():
        for variable, value in zip(model.non_trainable_variables, state):
            variable.assign(value)

    def loss():
        value = float(keras.ops.convert_to_numpy(loss_fn(labels, model(inputs, training=True))))
        restore()
        return value

    before = loss()
    model.train_on_batch(inputs, labels)
    restore()
    after = loss()
    assert after < before, f"loss went from {before} to {after}"


def write_pcm_wav(path, sampwidth, seconds=0.1, rate=8000):
    """A mono sine WAV of `sampwidth` bytes per sample (1: unsigned 8-bit, 2, 3, 4: signed PCM), as recorders
    write them; only 16-bit is one mbm_keras reads, the others are refused naming the bit depth."""
    import wave

    samples = np.sin(np.arange(int(seconds * rate)) / 5) * 0.5
    if sampwidth == 1:
        data = (samples * 127 + 128).astype(np.uint8).tobytes()
    elif sampwidth == 3:  # no numpy dtype: little-endian 3-byte ints
        data = b"".join(int(v * 8388607).to_bytes(3, "little", signed=True) for v in samples)
    else:
        data = (samples * (2 ** (8 * sampwidth - 1) - 1)).astype(f"<i{sampwidth}").tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(sampwidth)
        f.setframerate(rate)
        f.writeframes(data)
    return str(path)


def blank_png(path, width, height):
    """A 1-bit blank PNG of `width` x `height` pixels: a few KB, whatever its pixel count (a decompression bomb)."""
    from PIL import Image

    Image.new("1", (width, height)).save(path)
    return path


HERE = Path(__file__).resolve().parent


def cli(*argv, cwd=None, timeout=300):
    """`python -m mbm_keras.cli ARGV` alone in a fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "mbm_keras.cli", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def batch(cases, cwd):
    """Several command lines through `mbm_keras.cli.main` in one fresh process: `{name: result}`."""
    from cli_batch import MARK

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(HERE / "cli_batch.py"), json.dumps([list(map(str, a)) for a in
                                                                                   cases.values()])],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    assert proc.returncode == 0 and MARK in proc.stdout, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split(MARK, 1)[1])
    return dict(zip(cases, results))
