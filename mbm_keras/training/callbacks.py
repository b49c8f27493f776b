"""Callbacks that make a killed-and-resumed run end where an uninterrupted one does."""

import csv
import os

import keras
import numpy as np


class ReseedEachEpoch(keras.callbacks.Callback):
    """Sets every random-state variable of the model (dropout, stochastic depth)
    to a function of (seed, epoch) at the start of each epoch, and tells the
    `make_dataset` datasets given which epoch starts (their order and random
    draws are a function of (seed, epoch)).

    BackupAndRestore restores weights and optimizer state but not these, so
    without this a resumed run draws different dropout masks.

    Args:
        seed: the run's seed.
        datasets: datasets from `make_dataset` to keep in step with the epoch.

    Examples:
        >>> train_ds = make_dataset("train.csv", preprocessor=pre, training=True, seed=0)
        >>> model.fit(train_ds, epochs=10, callbacks=[ReseedEachEpoch(0, [train_ds]),
        ...                                           keras.callbacks.BackupAndRestore("runs/first/backup")])
    """

    def __init__(self, seed, datasets=()):
        super().__init__()
        self.seed = int(seed)
        self.datasets = list(datasets)

    def on_epoch_begin(self, epoch, logs=None):
        for dataset in self.datasets:
            dataset.set_epoch(epoch)
        for variable in self.model.non_trainable_variables:
            if variable.path.endswith("seed_generator_state"):
                value = np.array([self.seed, 1000003 * (epoch + 1)], dtype=variable.dtype)
                variable.assign(value)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; nothing of that epoch was saved."""


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' `TerminateOnNaN` in its strict form: the first NaN/inf batch loss
    stops training at once with a `TrainingDiverged` naming the epoch and step,
    before any epoch-end callback could save the non-finite weights (the
    backup of the last finished epoch and `best.keras` stay as they were).

    Examples:
        >>> model.fit(train_ds, epochs=10, callbacks=[StopOnNonFiniteLoss()])
    """

    def __init__(self):
        super().__init__(raise_error=True)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        try:
            super().on_batch_end(batch, logs)
        except RuntimeError:
            loss = (logs or {}).get("loss")
            raise TrainingDiverged(
                f"The training loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}; training stopped "
                f"and this epoch was not saved. Lower train.learning_rate (or add train.warmup_epochs), check the "
                f"data for extreme values, then train again (--restart to discard the run's backup)."
            ) from None


def weights_are_finite(model):
    return all(np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in model.weights
               if "float" in str(v.dtype))


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


def read_history(path, first_epoch, end_epoch):
    """Rows of `history.csv` (as dicts of floats) for epochs in [first, end)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    return [r for r in rows if first_epoch <= int(r["epoch"]) < end_epoch]


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Saves the model whenever `monitor` improves, atomically (a temporary
    file renamed over the last one), and after a resume remembers the best
    value of the epochs trained before the crash from `history.csv`, so a
    worse epoch never replaces the best model.

    Args:
        filepath: the `.keras` file to keep the best model in.
        monitor: the metric, e.g. "val_loss".
        history_path: the run's `history.csv` (written by a CSVLogger).
        **kwargs: other `keras.callbacks.ModelCheckpoint` arguments.

    Examples:
        >>> best = BestModelCheckpoint("runs/first/best.keras", "val_loss", "runs/first/history.csv")
    """

    def __init__(self, filepath, monitor, history_path, **kwargs):
        self.final_path = filepath
        self.history_path = history_path
        root, ext = os.path.splitext(filepath)
        super().__init__(f"{root}.tmp{ext}", monitor=monitor, save_best_only=True, **kwargs)
        self._replayed = False

    def set_model(self, model):
        # A training wrapper (train.balance: ogm_ge) saves the model it trains.
        super().set_model(getattr(model, "inner_model", model))

    def on_train_begin(self, logs=None):
        self._replayed = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._replayed:
            return
        self._replayed = True
        if self.monitor_op is None:
            self._set_monitor_op()
        for row in read_history(self.history_path, 0, epoch):
            value = row.get(self.monitor)
            if value is not None and self._is_improvement(value, self.best):
                self.best = value

    def _save_model(self, epoch, batch, logs):
        if not weights_are_finite(self.model):  # never a non-finite model as the best
            return
        super()._save_model(epoch, batch, logs)
        if os.path.exists(self.filepath):
            os.replace(self.filepath, self.final_path)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counts the epochs trained before a resume:
    their `history.csv` rows (from `first_epoch` on, the start of the current
    stage) are replayed before the first epoch runs. Weights are not restored
    at the end: `best.keras` holds the best model, `model.keras` the last.

    Args:
        history_path: the run's `history.csv`.
        first_epoch: the first epoch of the current training stage.
        **kwargs: other `keras.callbacks.EarlyStopping` arguments.

    Examples:
        >>> stop = ResumableEarlyStopping("runs/first/history.csv", monitor="val_loss", patience=3)
    """

    def __init__(self, history_path, first_epoch=0, **kwargs):
        super().__init__(restore_best_weights=False, **kwargs)
        self.history_path = history_path
        self.first_epoch = first_epoch
        self._replayed = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._replayed = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._replayed:
            return
        self._replayed = True
        for row in read_history(self.history_path, self.first_epoch, epoch):
            super().on_epoch_end(int(row["epoch"]), row)
