"""Callbacks that make a killed-and-resumed run end where an uninterrupted one does."""

import csv
import os

import keras
import numpy as np


class ReseedEachEpoch(keras.callbacks.Callback):
    """Sets every random-state variable of the model (dropout, stochastic depth)
    to a function of (seed, epoch) at the start of each epoch.

    BackupAndRestore restores weights and optimizer state but not these, so
    without this a resumed run draws different dropout masks.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self.model.non_trainable_variables:
            if variable.path.endswith("seed_generator_state"):
                value = np.array([self.seed, 1000003 * (epoch + 1)], dtype=variable.dtype)
                variable.assign(value)


class EpochLog(keras.callbacks.Callback):
    """`history.csv` with one row per epoch, keyed by epoch: an epoch that is
    trained again after a resume replaces its row instead of repeating it.
    Each write goes to a temporary file that replaces the log."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        rows = []
        if os.path.isfile(self.path):
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < epoch]
        rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        fields = ["epoch"] + sorted({k for r in rows for k in r if k != "epoch"})
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
