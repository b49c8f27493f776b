"""`task.kind: autoencoder` (`pretrain()`, `mbm-keras pretrain`): every feature of
the model section pretrained as the encoder half of an autoencoder on an
unlabelled manifest (`mbm_keras/pretraining/autoencoder.py`). The run folder
also holds each encoder's weights, `encoders/<feature>.weights.h5`, for
`build_fusion_model(<modality>_kwargs={"weights": ...})` or a config's
`model.<modality>_kwargs.weights`, and `reconstruction.png`."""

import os

import numpy as np

from mbm_keras.errors import ConfigError
from mbm_keras.tasks.base import Task, model_features, register_task

ENCODERS_FOLDER = "encoders"
PICTURE = "reconstruction.png"


def check_config(config, source):
    """The model names at least one feature; nothing a classifier alone uses is set."""
    features = model_features(config["model"])
    if not features:
        raise ConfigError(f"{source}: task.kind autoencoder pretrains the model section's encoders; name at least "
                          "one, e.g. model.image: small_cnn")
    missing = sorted(set(features) - set(config["data"]["columns"]))
    if missing:
        raise ConfigError(f"{source}: model features {missing} have no column in data.columns")
    if config["train"]["balance"] not in ("auto", "none"):
        raise ConfigError(f"{source}: train.balance {config['train']['balance']!r} balances a classifier's "
                          "modalities; an autoencoder has none to balance (balance: none)")
    for key in ("fine_tune",):
        if config["train"][key]:
            raise ConfigError(f"{source}: train.{key} is for classifiers; pretraining trains the whole encoder")


def build_from_config(task, model_cfg, pre, seed):
    """The autoencoder (uncompiled) of the model section's features."""
    from mbm_keras.pretraining import build_autoencoder

    features = {name: {"modality": f["modality"], "encoder": f["encoder"], "kwargs": f["kwargs"]}
                for name, f in model_features(model_cfg).items()}
    per_feature = {name: f["options"] for name, f in model_features(model_cfg).items() if f["options"]}
    return build_autoencoder(features, pre.model_kwargs(), per_feature or None, noise=task["noise"],
                             mask_rate=task["mask_rate"], seed=seed, compile=False)


def select_inputs(ds, names):
    """Batches of `(the features' inputs, zeros)`: the model's output is its loss."""
    import tensorflow as tf

    names = tuple(names)

    def pick(x, *_):
        return {k: x[k] for k in names}, tf.zeros(tf.shape(x[names[0]])[:1])

    from mbm_keras.data.pipeline import carry_attributes

    return carry_attributes(ds, ds.map(pick))


def loss_and_metrics():
    from mbm_keras.pretraining import per_example_loss

    return per_example_loss, []


def save_encoders(model, names, out):
    """Writes `encoders/<feature>.weights.h5` per feature; returns the paths."""
    folder = os.path.join(out, ENCODERS_FOLDER)
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name in names:
        path = os.path.join(folder, f"{name}.weights.h5")
        tmp = path + ".tmp.weights.h5"
        model.get_layer(f"{name}_encoder").save_weights(tmp)
        os.replace(tmp, path)
        paths[name] = path
    return paths


def validation_scores(model, val_ds, names):
    """Each feature's mean validation loss (reconstruction error or masked-token
    cross-entropy)."""
    import keras

    if val_ds is None:
        return {"task": "autoencoder", "why": "no data.val"}
    parts = keras.Model(model.inputs, [model.get_layer(f"{n}_loss").output for n in names])
    sums, count = np.zeros(len(names)), 0
    for x, _ in val_ds:
        values = parts(x, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        sums += [float(np.sum(v)) for v in values]
        count += int(np.shape(values[0])[0])
    return {"task": "autoencoder", "rows": count, "val_loss": {n: float(s / max(count, 1)) for n, s in zip(names, sums)}}


def format_scores(summary, paths):
    lines = [f"Encoder weights: {', '.join(paths.values())}"]
    if "val_loss" in summary:
        lines.insert(0, "Validation loss per feature: "
                     + ", ".join(f"{n} {v:.4f}" for n, v in summary["val_loss"].items()))
    return lines


def save_picture(model, dataset, pre, names, path, examples=6):
    """Inputs next to what the autoencoder rebuilt, one row per feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbm_keras.pretraining import reconstruction_model

    x, _ = next(iter(dataset))
    n = min(examples, int(np.shape(x[names[0]])[0]))
    fig, axes = plt.subplots(len(names) * 2, n, figsize=(1.8 * n, 3.6 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        target, rebuilt = (np.asarray(v) for v in reconstruction_model(model, name)(x, training=False))
        modality = pre.feature_modalities[name]
        for j in range(n):
            for k, (values, what) in enumerate(((target[j], "input"), (rebuilt[j], "rebuilt"))):
                ax = axes[2 * i + k][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{name}\n{what}", fontsize=8)
                if modality == "text":  # ids, and the most likely id at each position
                    ids = values if k == 0 else values.argmax(-1)
                    vocabulary = pre.features[name].tokenizer.vocabulary
                    words = [vocabulary[t] for t in ids if t > 0][:8]
                    ax.text(0.02, 0.5, "\n".join(words), fontsize=6, va="center")
                elif values.ndim == 3:  # an image
                    ax.imshow(np.clip(values, 0, 1))
                elif values.ndim == 2:  # a spectrogram or a series: time across
                    ax.imshow(values.T, aspect="auto", origin="lower")
                else:
                    ax.plot(values)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return path


@register_task("autoencoder")
class Autoencoder(Task):
    options = {
        # the noise of image/audio/other inputs and the share of text tokens masked (None: 0.1 and 0.15)
        "noise": (float, None),
        "mask_rate": (float, None),
    }
    docs = {
        "noise": "The noise added to image, audio and other inputs (None: 0.1).",
        "mask_rate": "The share of text tokens masked (None: 0.15).",
    }
    ranges = {"noise": (0, 1, True, True), "mask_rate": (0, 1, True, False)}
    predicts = False
    endpoints = ()

    def check_config(self, config, source):
        check_config(config, source)
        task = config["task"]
        task["noise"] = 0.1 if task["noise"] is None else task["noise"]
        task["mask_rate"] = 0.15 if task["mask_rate"] is None else task["mask_rate"]

    def columns(self, data):  # no labels are read
        return {k: v for k, v in data["columns"].items() if k != "label"}

    def holdout_label(self, data):
        return None

    def batches(self, ctx, dataset):  # (the features, zeros): the model's output is each example's loss
        return select_inputs(dataset, list(ctx.pre.features))

    def build(self, ctx):
        return build_from_config(ctx.task, ctx.model_cfg, ctx.pre, ctx.train_cfg["seed"])

    def loss_and_metrics(self, ctx):
        return loss_and_metrics()

    def announce(self, ctx):
        return f"Pretraining {', '.join(f'{n} ({m})' for n, m in ctx.pre.feature_modalities.items())} as autoencoders"

    def validate(self, ctx, model):
        return validation_scores(model, ctx.val_ds, list(ctx.pre.features))

    def after_save(self, ctx, model, summary):
        """What a classifier's config takes: each encoder's weights; and the reconstruction picture."""
        names = list(ctx.pre.features)
        summary["encoders"] = save_encoders(model, names, ctx.out)
        summary["picture"] = save_picture(model, ctx.val_ds if ctx.val_ds is not None else ctx.train_ds, ctx.pre,
                                          names, os.path.join(ctx.out, PICTURE))

    def format_scores(self, summary):
        return format_scores(summary, summary.get("encoders", {}))

    def check_loadable(self, folder):
        raise ValueError(f"{folder} is a pretraining run (mbm-keras pretrain): it holds autoencoders, not a "
                         f"model to evaluate, export or predict with. Its encoders are in "
                         f"{os.path.join(folder, ENCODERS_FOLDER)}/: give one to a classifier as "
                         f"model.<modality>_kwargs.weights")
