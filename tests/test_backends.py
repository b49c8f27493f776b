"""Model-side code is backend-neutral: models run on Keras' JAX backend too."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_inputs
from helpers import build_tiny

from mbm_keras import list_fusions

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "mbm_keras")
MODEL_SIDE = ["encoders", "fusions", "heads", "pretraining", "layers.py", "fusion_model.py", "finetune.py", "hub.py"]
ALL = {"image": "small_cnn", "text": "cnn", "audio": "logmel_cnn", "tabular": "mlp"}

JAX_SCRIPT = r"""
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import keras, numpy as np
import keras_hub  # noqa: F401 (its backbones, saved inside hub.keras)
import mbm_keras
assert keras.backend.backend() == "jax"
folder = sys.argv[1]
data = np.load(os.path.join(folder, "data.npz"))
inputs = {k[2:]: data[k] for k in data.files if k.startswith("x_")}
for name in sorted(f for f in os.listdir(folder) if f.endswith(".keras")):
    model = keras.models.load_model(os.path.join(folder, name))
    diff = np.abs(np.asarray(model.predict({k: inputs[k] for k in model.input}, verbose=0)) - data["y_" + name[:-6]]).max()
    assert diff < 1e-4, (name, diff)
    print(name, "ok", diff)
# Explained on JAX (jax.grad): the same integrated gradients as TensorFlow's tape gave, complete within 1%.
from mbm_keras.explain import integrated_gradients
model = keras.models.load_model(os.path.join(folder, "concat.keras"))
a = integrated_gradients(model, {k: inputs[k][:1] for k in model.input}, target=1)
assert a.error <= 0.01, a.error
for feature, values in a.features.items():
    diff = np.abs(values - data["ig_" + feature]).max() / np.abs(data["ig_" + feature]).max()
    assert diff < 1e-3, (feature, diff)
print("explained on jax ok", a.steps, a.error)
# Built and trained on JAX too: the loss goes down.
model = mbm_keras.build_fusion_model(image="mobilenet_v3_small", text="gru", audio="logmel_lstm", fusion="attention",
                                     num_classes=3, image_shape=(32, 32, 3), text_length=8, vocab_size=50,
                                     audio_length=2000, sample_rate=8000)
x = {k: inputs[k] for k in ("image", "text", "audio")}
history = model.fit(x, data["labels"], epochs=3, verbose=0).history["loss"]
assert history[-1] < history[0], history
print("built on jax ok")
"""


def test_model_side_code_does_not_use_tensorflow():
    pattern = re.compile(r"^\s*(import tensorflow|from tensorflow)|\btf\.\w", re.M)
    for entry in MODEL_SIDE:
        path = os.path.join(PACKAGE, entry)
        files = [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]
        for f in files:
            if f.endswith(".py"):
                with open(f, encoding="utf-8") as fh:
                    assert not pattern.search(fh.read()), f"{f} uses TensorFlow in model-side code"


@pytest.mark.slow
def test_models_saved_on_tensorflow_run_on_jax(tmp_path):
    import importlib.util

    import keras

    if importlib.util.find_spec("jax") is None:  # not imported here: jax beside TF in one process can stall TF
        pytest.skip("jax is not installed (it is in the [dev] extra)")
    inputs = tiny_inputs(ALL, batch=4)
    labels = np.arange(4) % 3
    saved = {}
    for fusion in list_fusions():
        model = build_tiny(ALL, fusion=fusion, num_classes=3)
        model.save(tmp_path / f"{fusion}.keras")
        saved[f"y_{fusion}"] = model.predict(inputs, verbose=0)
    # KerasHub backbones (text and vision presets) and an autoencoder (its output: each example's loss).
    from conftest import TINY

    from mbm_keras.pretraining import build_autoencoder

    others = {"hub": build_tiny({"image": "keras_hub_image", "text": "keras_hub"}, num_classes=3),
              "autoencoder": build_autoencoder({m: (m, e) for m, e in ALL.items()}, TINY, seed=0)}
    for name, model in others.items():
        model.save(tmp_path / f"{name}.keras")
        saved[f"y_{name}"] = model.predict({k: inputs[k] for k in model.input}, verbose=0)
    from mbm_keras.explain import integrated_gradients

    concat = keras.models.load_model(tmp_path / "concat.keras")
    explained = integrated_gradients(concat, {k: v[:1] for k, v in inputs.items() if k in concat.input}, target=1)
    saved.update({f"ig_{f}": v for f, v in explained.features.items()})
    np.savez(tmp_path / "data.npz", labels=labels, **{f"x_{k}": v for k, v in inputs.items()}, **saved)
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count(" ok ") == len(list_fusions()) + len(others) + 1 and "built on jax ok" in proc.stdout
    assert "explained on jax ok" in proc.stdout
