"""The optimizer and learning-rate schedule a config's `train` section names."""

import keras

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}
SCHEDULES = ("constant", "cosine", "exponential")


def make_optimizer(name="adam", learning_rate=1e-3, schedule="constant", total_steps=None, warmup_steps=0,
                   weight_decay=None):
    """A Keras optimizer with an optional learning-rate schedule.

    Args:
        name: "adam", "adamw", "sgd" (momentum 0.9) or "rmsprop".
        learning_rate: the peak learning rate.
        schedule: "constant"; "cosine" (decays to 0 over `total_steps`, after
            a linear warm-up of `warmup_steps`); "exponential" (x0.1 over
            `total_steps`).
        total_steps: training steps the schedule spans (needed unless constant).
        warmup_steps: linear warm-up from 0 to `learning_rate` (cosine only).
        weight_decay: decoupled weight decay (any optimizer; AdamW's default 0.004).

    Examples:
        >>> opt = make_optimizer("adamw", 3e-4, "cosine", total_steps=1000, warmup_steps=100)
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}. Received: optimizer={name!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}. Received: lr_schedule={schedule!r}")
    lr = learning_rate
    if schedule != "constant":
        if not total_steps or total_steps < 1:
            raise ValueError(f"lr_schedule={schedule!r} needs the number of training steps. Received: total_steps={total_steps!r}")
        if schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(
                0.0 if warmup_steps else learning_rate,
                decay_steps=max(1, total_steps - warmup_steps),
                warmup_target=learning_rate if warmup_steps else None,
                warmup_steps=warmup_steps,
            )
        else:
            lr = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=total_steps, decay_rate=0.1)
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    return OPTIMIZERS[name](lr, **kwargs)
