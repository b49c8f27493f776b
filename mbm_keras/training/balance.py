"""Balanced multimodal training: `train.balance` and `train.keep_best_of`.

A fusion trained end to end from random weights leans on whichever modality
it learns fastest and under-trains the others ("modality competition", Du et
al., ICML 2023); on data with one weak modality it can score below a model of
its strongest modality alone. Two cures, chosen in the run config:

- `unimodal`: each modality's own model is trained first, on the same rows
  (`singles/<modality>/`, itself a run folder), its encoders start the
  fusion, and the fusion trains with modality dropout (`data.modality_dropout`,
  0.5 when unset) so that no modality can carry it alone.
- `probe` (the default for several modalities): each modality's own model is
  trained first, as for `unimodal`; the fusion starts from their encoders,
  which stay frozen while the fusion layers and the head learn (a linear
  probe, `train.epochs` epochs at the learning rate), then everything is
  fine-tuned at a tenth of the learning rate for half as many epochs (LP-FT,
  Kumar et al., ICLR 2022). No modality dropout. The
  fusion starts from features that already work alone, and fine-tuning at a
  low rate cannot quickly undo them; the best validation epoch over both
  stages is the one kept.
- `ogm_ge`: on-the-fly gradient modulation with generalization enhancement
  (Peng et al., CVPR 2022). Each step scores every modality alone (the fusion
  with the other modalities masked out, no gradient), and scales the encoder
  gradients of the modality ahead by `1 - tanh(alpha * (ratio - 1))`, with
  Gaussian noise of the gradient's own spread added to the scaled gradients
  (the "GE" part). The scores use the fusion's own head, so it works with
  every fusion of the zoo, not only concat.

`keep_best_of: all` trains the single models too (when the balance does not)
and keeps the best of the fusion and the single models by their validation
score; the run folder then holds the kept model, and `fusion/` the fusion.
`keep_best_of: auto` (the default) is `all` when the run has validation data
(`data.val`, or the rows `data.val_split` holds out) and several modalities,
else `fusion`: the run never ships a fusion that scored below one of its own
parts on validation.

Everything here works on modality groups: a modality's features (say `front`
and `rear` images) count as one modality, trained alone together.
"""

import math
import os

import keras

BALANCES = ("auto", "none", "unimodal", "probe", "ogm_ge")
KEEP = ("auto", "fusion", "all")
UNIMODAL_DROPOUT = 0.5
SINGLES = "singles"
FUSION = "fusion"
SUMMARY = "summary.json"


class Plan:
    """What `train()` does for balance, resolved from the config and the model's modalities.

    Attributes:
        balance: "none", "unimodal" or "ogm_ge" ("auto" resolved).
        keep: "fusion" or "all".
        groups: `{modality: [features]}` in feature order.
        dropout: the modality dropout of the fusion's training data.
        masks: the fusion has `<feature>_mask` inputs (needed by dropout and ogm_ge).
        singles: train each modality's own model first.
        alpha: the strength of ogm_ge's modulation.
    """

    def __init__(self, balance, keep, groups, dropout, masks, alpha):
        self.balance, self.keep, self.groups = balance, keep, groups
        self.dropout, self.masks, self.alpha = dropout, masks, alpha
        self.singles = balance in ("unimodal", "probe") or keep == "all"
        self.probe = balance == "probe"

    def probe_epochs(self, epochs):
        """The linear probe's epochs: `train.epochs` under `probe`, else 0."""
        return epochs if self.probe else 0

    def tune_epochs(self, epochs):
        """The epochs that train the whole model after the probe: half as many under `probe`, else `epochs`."""
        return epochs // 2 if self.probe else epochs

    def describe(self):
        parts = [f"balance '{self.balance}'"]
        if self.balance == "probe":
            parts.append(f"single models of {', '.join(self.groups)} first, then the fusion from their encoders: "
                         f"frozen (a linear probe), then fine-tuned at a tenth of the learning rate for half as "
                         f"many epochs")
        elif self.balance == "unimodal":
            parts.append(f"single models of {', '.join(self.groups)} first, then the fusion from their encoders "
                         f"with modality dropout {self.dropout:g}")
        elif self.balance == "ogm_ge":
            parts.append(f"gradient modulation over {', '.join(self.groups)} (alpha {self.alpha:g})")
        if self.keep == "all":
            parts.append("keeping the best of the fusion and the single models")
        return "; ".join(parts)


def modality_groups(feature_modalities):
    """`{modality: [features]}` of `{feature: modality}`, in feature order."""
    groups = {}
    for feature, modality in feature_modalities.items():
        groups.setdefault(modality, []).append(feature)
    return groups


def make_plan(train_cfg, data_cfg, feature_modalities, fusion="concat", source="config", validation=None):
    """Resolves `train.balance` ("auto": probe for several modalities,
    none for one), `train.keep_best_of` ("auto": all when there is validation
    data and several modalities) and the fusion's modality dropout.

    `validation`: whether the run has validation data (None: whether `data.val` is set).

    Raises:
        ConfigError: `unimodal` or `ogm_ge` asked for a model of one modality,
            or single models asked of a fusion that cannot take one modality alone.
    """
    from mbm_keras.fusions import FUSIONS
    from mbm_keras.errors import ConfigError

    groups = modality_groups(feature_modalities)
    balance, keep = train_cfg["balance"], train_cfg["keep_best_of"]
    fusion_cls = FUSIONS.get(fusion)
    # Single models keep a sequence fusion (see build_single_model): it must take one modality's features.
    alone = [m for m, names in groups.items() if fusion_cls.needs_sequences and len(names) < fusion_cls.min_features]
    if validation is None:
        validation = bool(data_cfg.get("val"))
    if balance == "auto":
        balance = "probe" if len(groups) > 1 else "none"
        if balance == "probe" and alone:
            print(f"train.balance auto: fusion {fusion!r} cannot take the {', '.join(alone)} features alone, so "
                  f"no single models are trained (balance none); set train.balance: ogm_ge to balance it",
                  flush=True)
            balance = "none"
    if keep == "auto":
        keep = "all" if validation and len(groups) > 1 and not alone else "fusion"
        if validation and len(groups) > 1 and alone:
            print(f"train.keep_best_of auto: fusion {fusion!r} cannot take the {', '.join(alone)} features alone, "
                  f"so the run keeps the fusion without comparing it with single models", flush=True)
    if (balance in ("unimodal", "probe") or keep == "all") and alone and len(groups) > 1:
        key = f"train.balance: {balance}" if balance in ("unimodal", "probe") else "train.keep_best_of: all"
        raise ConfigError(
            f"{source}: {key} trains each modality alone, but fusion {fusion!r} needs at least "
            f"{fusion_cls.min_features} features and the {', '.join(alone)} features cannot be trained alone "
            f"with it. Use train.balance: ogm_ge (or none) with train.keep_best_of: fusion")
    if balance != "none" and len(groups) < 2:
        (modality, features), = groups.items()
        raise ConfigError(
            f"{source}: train.balance={balance!r} balances several modalities, but this model has only "
            f"{modality} features ({', '.join(features)}). Use train.balance: none (or leave it unset)")
    if keep == "all" and len(groups) < 2:
        print("train.keep_best_of: all has nothing to compare in a model of one modality; keeping the model as is",
              flush=True)
        keep = "fusion"
    dropout = data_cfg["modality_dropout"]
    defaulted = dropout is None
    if defaulted:
        dropout = UNIMODAL_DROPOUT if balance == "unimodal" else 0.0
    # Modality dropout and ogm_ge's unimodal scores need the masks; an explicit
    # data.modality_dropout without data.missing_modalities stays an error.
    masks = data_cfg["missing_modalities"] or balance == "ogm_ge" or (defaulted and dropout > 0)
    return Plan(balance, keep, groups, dropout, masks, train_cfg["ogm_alpha"])


# ------------------------------------------------------------------------------------- single models


def single_model_kwargs(model_kwargs, feature_modalities, modality):
    """`build_fusion_model` arguments of the model of `modality`'s features
    alone, from those of the fusion (`model_kwargs`)."""
    from mbm_keras.modalities import get_modality, list_modalities

    keep = {f for f, m in feature_modalities.items() if m == modality}
    out = {}
    for key, value in model_kwargs.items():
        if key in list_modalities():  # an encoder keyword: the feature named after its modality
            if key in keep:
                out[key] = value
        elif key == "features":
            chosen = {f: spec for f, spec in value.items() if f in keep}
            if chosen:
                out[key] = chosen
        elif key == "share_encoders":
            out[key] = {a: b for a, b in value.items() if a in keep} or None
        elif key == "feature_options":
            out[key] = {f: o for f, o in value.items() if f in keep}
        elif key == "weights" and not get_modality(modality).WEIGHTS_ARGUMENT:
            continue
        else:
            out[key] = value
    return out


def build_single_model(model_kwargs, feature_modalities, modality, fusion):
    """The model of one modality's features, with the run's encoders and fusion.

    Raises:
        ValueError: that fusion cannot take this modality alone (naming both).
    """
    from mbm_keras import build_fusion_model

    from mbm_keras.fusions import FUSIONS

    kwargs = single_model_kwargs(model_kwargs, feature_modalities, modality)
    if not FUSIONS.get(fusion).needs_sequences:
        # Pooled features: one modality needs no fusion beyond concat's hidden
        # layer. Sequence fusions keep theirs: the encoders (whose weights
        # start the fusion) then return sequences in both models.
        kwargs["fusion"], kwargs["fusion_kwargs"] = "concat", None
    try:
        return build_fusion_model(**kwargs, name=f"{modality}_only")
    except (ValueError, TypeError) as e:
        features = [f for f, m in feature_modalities.items() if m == modality]
        raise ValueError(
            f"train.balance / train.keep_best_of train each modality alone, but the {modality} features "
            f"({', '.join(features)}) cannot be trained alone with fusion {fusion!r}: {e}. "
            f"Use train.balance: ogm_ge (or none) with train.keep_best_of: fusion") from None


def copy_encoders(single, fusion, features):
    """Loads the encoder weights of `single` into `fusion`, feature by feature."""
    for feature in features:
        name = f"{feature}_encoder"
        try:
            source = single.get_layer(name)
        except ValueError:  # a feature that shares another's encoder
            continue
        fusion.get_layer(name).set_weights(source.get_weights())


def single_folder(out, modality):
    return os.path.join(out, SINGLES, modality)


def select_inputs(dataset, names):
    """`dataset` with only the model inputs in `names` (a single model's),
    keeping `make_dataset`'s `set_epoch` and `report`."""
    from mbm_keras.data.pipeline import carry_attributes

    names = list(names)
    return carry_attributes(dataset, dataset.map(lambda x, *y: ({k: x[k] for k in names}, *y)))


def mask_others(dataset, keep_features, all_features):
    """`dataset` with every feature outside `keep_features` marked absent
    (its `<feature>_mask` set to 0): the fusion scored on one modality."""
    import tensorflow as tf

    gone = [f for f in all_features if f not in keep_features]

    def hide(x, *y):
        x = dict(x)
        for f in gone:
            x[f"{f}_mask"] = tf.zeros_like(x[f"{f}_mask"])
        return (x, *y)

    return dataset.map(hide)


# ------------------------------------------------------------------------------------- ogm_ge


class GradientModulation(keras.Model):
    """Trains `model` with OGM-GE (Peng et al., CVPR 2022), generalized to any
    fusion: each step scores every modality group alone (`exp(-loss)` of the
    fusion with the other groups' masks at 0, no gradient), and the encoder
    gradients of a group whose score is `ratio` times the others' mean are
    multiplied by `1 - tanh(alpha * max(0, ratio - 1))`, plus Gaussian noise
    with the scaled gradient's own standard deviation.

    Only the training step differs: calling it calls `model`, and `model`
    (a plain functional model) is what is saved. TensorFlow backend (the
    trainer's).

    Args:
        model: a functional fusion model with `<feature>_mask` inputs.
        groups: `{modality: [features]}`.
        alpha: modulation strength (> 0).
    """

    def __init__(self, model, groups, alpha, **kwargs):
        super().__init__(name=f"{model.name}_modulated", **kwargs)
        self.inner_model = model
        self.groups = {m: list(f) for m, f in groups.items()}
        self.alpha = float(alpha)
        self.group_of = {}  # id(variable) -> modality, for the encoders' variables
        for modality, features in self.groups.items():
            for feature in features:
                try:
                    layer = model.get_layer(f"{feature}_encoder")
                except ValueError:  # shares another feature's encoder
                    continue
                for variable in layer.trainable_variables:
                    self.group_of[id(variable)] = modality
        self.built = True  # the functional model inside is

    def call(self, inputs, training=False):
        return self.inner_model(inputs, training=training)

    def _alone(self, x, modality):
        x = dict(x)
        for other, features in self.groups.items():
            if other != modality:
                for f in features:
                    x[f"{f}_mask"] = keras.ops.zeros_like(x[f"{f}_mask"])
        return x

    def coefficients(self, x, y):
        """`{modality: coefficient}` of one batch (1 for every group not ahead)."""
        import tensorflow as tf

        scores = {}
        for modality in self.groups:
            prediction = tf.stop_gradient(self.inner_model(self._alone(x, modality), training=False))
            scores[modality] = tf.exp(-tf.reduce_mean(self.loss(y, prediction)))
        out = {}
        for modality, score in scores.items():
            others = tf.add_n([s for m, s in scores.items() if m != modality]) / (len(scores) - 1)
            ratio = score / (others + 1e-8)
            out[modality] = 1.0 - tf.tanh(self.alpha * tf.nn.relu(ratio - 1.0))
        return out

    def train_step(self, data):
        import tensorflow as tf
        from keras.src import tree
        from keras.src.trainers.data_adapters import data_adapter_utils

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        coefficients = self.coefficients(x, y)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(
                keras.src.losses.loss.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(next(i for i in tree.flatten(x) if i is not None))[0])
            loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        gradients = tape.gradient(loss, variables)
        seed = tf.cast(self.optimizer.iterations, tf.int32)
        for i, (g, v) in enumerate(zip(gradients, variables)):
            modality = self.group_of.get(id(v))
            if g is None or modality is None:
                continue
            k = tf.cast(coefficients[modality], g.dtype)
            noise = tf.random.stateless_normal(tf.shape(g), tf.stack([seed, i]), dtype=g.dtype) * tf.math.reduce_std(g)
            # Noise only where the gradient is scaled down (GE); 1 leaves it as it is.
            gradients[i] = g * k + tf.where(k < 1.0, noise, tf.zeros_like(noise))
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def unwrap(model):
    """The functional model inside a `GradientModulation` (or `model` itself)."""
    return getattr(model, "inner_model", model)


# ------------------------------------------------------------------------------------- report


def score_metric(head):
    """`(metric name, "max"|"min")`: the head's score for comparing models."""
    return getattr(head, "score", ("loss", "min"))


def gain(fusion_score, single_scores, direction):
    """The fusion's margin over the best single model (positive: the fusion is
    better), and that model's modality; None when nothing to compare."""
    if fusion_score is None or not single_scores:
        return None, None
    pick = max if direction == "max" else min
    best = pick(single_scores, key=single_scores.get)
    margin = fusion_score - single_scores[best] if direction == "max" else single_scores[best] - fusion_score
    return float(margin), best


def _score(model, dataset, metric):
    return float(model.evaluate(dataset, verbose=0, return_dict=True)[metric])


def validation_summary(out, model, singles, plan, val_ds, head, measure=True):
    """Each modality's validation score next to the fusion's (its best epoch,
    `best.keras`), the fusion's gain over the best of them, and which model
    the run keeps (`train.keep_best_of`). The modalities' scores are those of
    the single models when the run trained them, and the fusion's with the
    other modalities masked out when it has masks.

    Returns:
        the dict `summary.json` holds; `kept_modality` names a single model
        that won under `keep_best_of: all`.
    """
    metric, direction = score_metric(head)
    summary = {"where": "validation", "metric": metric, "better": direction, "balance": plan.balance,
               "keep_best_of": plan.keep, "modalities": list(plan.groups), "fusion": None, "singles": {},
               "masked": {}, "gain": None, "best_single": None, "kept": "fusion"}
    if len(plan.groups) < 2:
        summary["why"] = "a model of one modality"
        if val_ds is not None and measure:
            summary["score"] = _score(model, val_ds, metric)
        return summary
    if val_ds is None:
        summary["why"] = "no validation set: set data.val"
        return summary
    if not measure:
        summary["why"] = "not measured under multi_worker; run mbm-keras evaluate on the validation data"
        return summary
    fusion = model  # train() has loaded its best validation epoch (best.keras) into it
    summary["fusion"] = _score(fusion, val_ds, metric)
    for modality, single in singles.items():
        summary["singles"][modality] = _score(single, select_inputs(val_ds, list(single.input)), metric)
    if plan.masks:
        features = [f for names in plan.groups.values() for f in names]
        for modality, names in plan.groups.items():
            summary["masked"][modality] = _score(fusion, mask_others(val_ds, names, features), metric)
    summary["score"] = summary["fusion"]  # the kept model's (a single model's when one is kept, below)
    summary["gain"], summary["best_single"] = gain(summary["fusion"], summary["singles"] or summary["masked"],
                                                   direction)
    if plan.keep == "all" and summary["gain"] is not None and summary["best_single"] in singles:
        single = singles[summary["best_single"]]
        summary["margin"] = noise_margin(fusion, single, val_ds, metric)
        if summary["gain"] < 0:
            summary["kept_modality"] = summary["best_single"]
            summary["score"] = summary["singles"][summary["best_single"]]
            summary["kept"] = (f"the {summary['best_single']} model alone (better than the fusion by "
                               f"{-summary['gain']:.4f} {metric}); the fusion is in {FUSION}/")
        elif summary["gain"] < summary["margin"]:
            summary["kept_modality"] = summary["best_single"]
            summary["score"] = summary["singles"][summary["best_single"]]
            summary["kept"] = (f"the {summary['best_single']} model alone: the fusion's gain ({summary['gain']:+.4f} "
                               f"{metric}) is within the validation set's noise ({summary['margin']:.4f}, one "
                               f"standard error of the paired difference), so the simpler model is kept; the "
                               f"fusion is in {FUSION}/")
    return summary


def noise_margin(fusion, single, val_ds, metric):
    """How far the fusion must be above `single` on validation to be kept:
    for accuracy, one standard error of the per-example difference in
    correctness (the two models scored on the same rows); 0 for other metrics.
    A gain within it is as likely noise as a real gain, and on data it was not
    tuned on, a fusion that only matched its best part on validation lost to
    it on new sources (benchmarks/fusion_stress.py)."""
    import numpy as np

    if metric != "accuracy":
        return 0.0
    labels = np.concatenate([np.asarray(y) for _, y in val_ds.as_numpy_iterator()])
    if labels.ndim != 1:  # not one class per row
        return 0.0
    right_fusion = np.argmax(fusion.predict(val_ds, verbose=0), axis=-1) == labels
    single_ds = select_inputs(val_ds, list(single.input))
    right_single = np.argmax(single.predict(single_ds, verbose=0), axis=-1) == labels
    difference = right_fusion.astype(float) - right_single.astype(float)
    if len(difference) < 2:
        return 0.0
    return float(np.std(difference, ddof=1) / np.sqrt(len(difference)))


def format_summary(summary):
    """The lines `train()` prints at the end of a run (and `mbm-keras evaluate` for its breakdown)."""
    metric = summary["metric"]
    lines = []
    scores = summary.get("singles") or {}
    masked = summary.get("masked") or {}
    validation = summary.get("validation") or {}
    if validation.get("source") == "data.val_split":
        rows = validation["rows"]
        lines.append(f"validation: {rows['val']} rows held out of data.train ({rows['train']} trained on); "
                     f"their row numbers: {validation['rows_file']}")
    epoch = summary.get("epoch")
    if epoch:
        lines.append(f"epoch kept{' (' + epoch['model'] + ')' if epoch.get('model') else ''}: {epoch['kept']} of "
                     f"{epoch['of']}, {epoch['why']}"
                     + (f" ({epoch['monitor']} {epoch['value']:.4f})" if "value" in epoch else ""))
    if len(summary["modalities"]) < 2:
        return lines
    if summary.get("fusion") is None:
        lines.append(f"per-modality {summary['where']} scores: not measured ({summary.get('why')})")
        return lines
    lines.append(f"{summary['where']} {metric}: fusion {summary['fusion']:.4f}")
    for modality in summary["modalities"]:
        parts = []
        if modality in scores:
            parts.append(f"{modality} alone {scores[modality]:.4f}")
        if modality in masked:
            parts.append(f"fusion with only {modality} {masked[modality]:.4f}")
        if parts:
            lines.append("  " + ", ".join(parts))
    if summary.get("gain") is not None:
        kind = "single model" if scores else "modality (fusion, others masked)"
        lines.append(f"  fusion - best {kind} ({summary['best_single']}): {summary['gain']:+.4f}")
        if summary["gain"] < 0:
            lines.append(
                f"WARNING: the fusion scores below its best modality alone ({summary['best_single']}). Try another "
                f"train.balance ({', '.join(b for b in BALANCES if b not in ('auto', summary.get('balance')))})"
                + (", or train.keep_best_of: all to keep the better model." if summary.get("keep_best_of") != "all"
                   else "; the run keeps the better model (train.keep_best_of: all)."))
    elif not scores and not masked:
        lines.append("  per-modality scores: not measured (train.balance: none trains no single models and the "
                     "model has no modality masks; set train.keep_best_of: all or train.balance: unimodal)")
    if summary.get("keep_best_of") == "all":
        why = summary["kept"]
        if why == "fusion":
            why = "the fusion (at least as good as every single model on validation"
            if summary.get("gain") is not None and summary.get("margin") is not None:
                why = (f"the fusion ({summary['gain']:+.4f} {metric} over {summary['best_single']} alone, beyond the "
                       f"validation noise of {summary['margin']:.4f}")
            why += ")"
        lines.append(f"kept (train.keep_best_of: all): {why}")
    return lines


def finite(value):
    return value is not None and math.isfinite(value)
