"""Data: manifests of real files -> tf.data batches matching `build_fusion_model` inputs.

    >>> from mbm_keras.data import fit_preprocessor, make_dataset, split_manifest
    >>> splits = split_manifest("all.csv", stratify="label", group="speaker", out_dir="splits")
    >>> pre = fit_preprocessor(splits["train"], {"image": "path", "text": "caption", "label": "label"})
    >>> train = make_dataset(splits["train"], preprocessor=pre, training=True)
"""

from mbm_keras.data.check import check_data
from mbm_keras.data.labels import LabelEncoder
from mbm_keras.data.manifest import DataError, Manifest, read_manifest
from mbm_keras.data.pipeline import make_dataset
from mbm_keras.data.preprocessor import Preprocessor, fit_preprocessor
from mbm_keras.data.shards import pack
from mbm_keras.data.split import split_manifest, write_manifest
from mbm_keras.codecs.tabular import TabularEncoder
from mbm_keras.codecs.text import TextTokenizer

__all__ = [
    "DataError",
    "LabelEncoder",
    "Manifest",
    "Preprocessor",
    "TabularEncoder",
    "TextTokenizer",
    "check_data",
    "fit_preprocessor",
    "make_dataset",
    "pack",
    "read_manifest",
    "split_manifest",
    "write_manifest",
]
