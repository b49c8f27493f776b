import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Tiny shapes for every test, from each registered modality's tiny spec: 32x32
# images, 8 tokens from a vocabulary of 50, 0.25 s of 8 kHz audio, 5 tabular
# features, 16 steps of 3-channel time series.
from mbm_keras.modalities import get_modality, list_modalities  # noqa: E402

TINY = {k: v for m in list_modalities() for k, v in get_modality(m).TINY.items()}


def _tiny_text_preset():
    """A tiny random BERT preset (vocabulary 50, up to 16 tokens) for the text
    feature's `text_preset`: the `keras_hub` encoder takes it, the other text
    encoders ignore it, so every registry-wide test builds it too. Returns
    the preset and the temporary folder (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    from presets import tiny_bert_preset

    folder = tempfile.mkdtemp(prefix="mbm_keras_tiny_bert_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return tiny_bert_preset(os.path.join(folder, "preset"), vocabulary_size=TINY["vocab_size"]), folder


TINY["text_preset"], _PRESETS = _tiny_text_preset()
# The keras_hub_image encoder's preset: a one-block ResNet.
TINY["image_preset"] = __import__("presets").tiny_resnet_preset(os.path.join(_PRESETS, "resnet"))

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def tiny_inputs(modalities=(), batch=4, seed=0, features=None):
    """Random inputs of the right dtype and range for `modalities` (names), or
    for named `features` (`{feature: modality}`)."""
    from mbm_keras.fusion_model import input_specs

    rng = np.random.default_rng(seed)
    features = dict(features or {m: m for m in modalities})
    ranges = {"image": (0, 255), "audio": (-0.5, 0.5)}
    out = {}
    for name, (shape, dtype, _) in input_specs(features, TINY).items():
        modality = features[name]
        if dtype == "int32":
            out[name] = rng.integers(1, TINY["vocab_size"], (batch, *shape)).astype("int32")
        elif modality in ranges:
            out[name] = rng.uniform(*ranges[modality], (batch, *shape)).astype("float32")
        else:
            out[name] = rng.normal(size=(batch, *shape)).astype("float32")
    return out


@pytest.fixture
def tiny():
    return dict(TINY)


# The longest test modules first: pytest-xdist (--dist loadscope) hands out
# modules and test classes in collection order, so a long one collected last
# would leave the other worker idle at the end.
# Measured with benchmarks/suite.py: make test's longest (notebooks, backends, demo) are all slow; the rest are
# test-fast's longest.
LONGEST_FIRST = ("test_notebooks.py", "test_serve_tasks.py", "test_tune.py", "test_deploy.py", "test_hardening.py", "test_hostile.py",
                 "test_features.py", "test_backends.py", "test_demo.py", "test_data.py", "test_validation.py", "test_shards.py",
                 "test_keras_hub.py", "test_serve.py", "test_training.py", "test_finetune.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each module is kept
