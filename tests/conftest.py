import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Tiny shapes for every test: 32x32 images, 8 tokens from a vocabulary of 50,
# 0.25 s of 8 kHz audio, 5 tabular features.
TINY = dict(
    image_shape=(32, 32, 3),
    text_length=8,
    vocab_size=50,
    audio_length=2000,
    sample_rate=8000,
    tabular_dim=5,
)

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def tiny_inputs(modalities, batch=4, seed=0):
    """Random inputs of the right dtype and range for `modalities`."""
    rng = np.random.default_rng(seed)
    makers = {
        "image": lambda: rng.uniform(0, 255, (batch, *TINY["image_shape"])).astype("float32"),
        "text": lambda: rng.integers(1, TINY["vocab_size"], (batch, TINY["text_length"])).astype("int32"),
        "audio": lambda: rng.uniform(-0.5, 0.5, (batch, TINY["audio_length"])).astype("float32"),
        "tabular": lambda: rng.normal(size=(batch, TINY["tabular_dim"])).astype("float32"),
    }
    return {m: makers[m]() for m in modalities}


@pytest.fixture
def tiny():
    return dict(TINY)


# The longest test modules first: pytest-xdist (--dist loadscope) hands out
# modules and test classes in collection order, so a long one collected last
# would leave the other worker idle at the end.
LONGEST_FIRST = ("test_notebooks.py", "test_deploy.py", "test_hardening.py", "test_backends.py", "test_demo.py",
                 "test_training.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each module is kept
