"""A `model.fit` replacement for `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's `fit` fails under MultiWorkerMirroredStrategy ("Attempt to convert a
value (PerReplica ...)", keras-team/keras#20585). `distributed_fit` runs the
model's own `train_step` / `test_step` (so losses, loss scaling and metrics are
Keras') inside `strategy.run` over a `strategy.experimental_distribute_dataset`,
and drives the same callbacks `fit` does: the progress bar, checkpoints,
BackupAndRestore, EarlyStopping, CSV and TensorBoard logs. Metrics are read in
cross-replica context, which sums them over every replica of every worker, so
all workers log the same figures and stop at the same epoch. BatchNormalization
uses the statistics of the global batch while training (see
`_global_batch_statistics`).

Each global batch is split over the replicas of all workers; the average of
their gradients is the gradient of the global batch, so the workers end with
the weights one process reaches on the same global batches.
"""

import contextlib

import keras
import tensorflow as tf


def is_chief(strategy):
    """True for the worker that writes the run folder (the "chief" task, or
    worker 0 of a cluster without one, or a single process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _metrics(model):
    return {k: float(v) for k, v in model.get_metrics_result().items()}


@contextlib.contextmanager
def _global_batch_statistics(model):
    """BatchNormalization layers (nested backbones included) use the mean and
    variance of the global batch, all-reduced over the replicas, instead of
    each replica's share: the workers then match one process on the same
    global batches and keep identical moving statistics.

    The flag is set only while a step runs (and is traced), never when the
    model is saved, so a saved model still loads on every Keras backend."""
    layers = [
        layer for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized
    ]
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronized = False


def _distribute(strategy, dataset):
    """A dataset of global batches is split between the workers by tf.distribute;
    one a worker made of its own part (`make_dataset(shards, workers=...)`,
    marked `per_worker`) goes to that worker as it is."""
    if not getattr(dataset, "per_worker", False):
        return strategy.experimental_distribute_dataset(dataset)

    def own_part(context):
        index, count = dataset.workers
        if (context.input_pipeline_id, context.num_input_pipelines) != (index, count) or \
                count != strategy.num_replicas_in_sync:
            raise ValueError(f"the dataset was made for worker {index} of {count}, but this is input pipeline "
                             f"{context.input_pipeline_id} of {context.num_input_pipelines} with "
                             f"{strategy.num_replicas_in_sync} replica(s) (one replica per worker is needed)")
        return dataset

    return strategy.distribute_datasets_from_function(own_part)


def _step_function(model, strategy, step):
    @tf.function
    def traced(batch):
        strategy.run(step, args=(batch,))

    def run(batch):
        with _global_batch_statistics(model):
            traced(batch)

    return run


def distributed_fit(
    model,
    strategy,
    x,
    epochs=1,
    verbose="auto",
    callbacks=None,
    validation_data=None,
    initial_epoch=0,
):
    """Trains `model` on `x` under `strategy` like `model.fit` does.

    Args:
        model: a compiled model, built and compiled inside `strategy.scope()`.
        strategy: a `tf.distribute` strategy (made for MultiWorkerMirroredStrategy;
            any strategy works).
        x: a `tf.data.Dataset` of `(features, labels)` batched by the global
            batch size, with a known cardinality.
        epochs, verbose, callbacks, validation_data, initial_epoch: as in `fit`.

    Returns:
        the `keras.callbacks.History` of the run.

    Examples:
        >>> with strategy.scope():
        ...     model = build_fusion_model(..., compile=True)
        >>> history = distributed_fit(model, strategy, train_ds, epochs=3, validation_data=val_ds)
    """
    steps = int(x.cardinality())
    if steps < 0:
        raise ValueError("distributed_fit needs a dataset of known length (make_dataset's are). "
                         f"Received a dataset with cardinality {steps}")
    train_data = _distribute(strategy, x)
    val_data = _distribute(strategy, validation_data) if validation_data is not None else None
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    train_step = _step_function(model, strategy, model.train_step)
    test_step = _step_function(model, strategy, model.test_step)

    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
            epochs=epochs, steps=steps, model=model,
        )
    model.stop_training = False
    model._initial_epoch = None
    callbacks.on_train_begin()
    initial_epoch = model._initial_epoch or initial_epoch  # set by BackupAndRestore on resume
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step, batch in enumerate(train_data):
            callbacks.on_train_batch_begin(step)
            train_step(batch)
            callbacks.on_train_batch_end(step, _metrics(model))
            if model.stop_training:
                break
        logs = _metrics(model)
        if val_data is not None:
            model.reset_metrics()
            callbacks.on_test_begin()
            for step, batch in enumerate(val_data):
                callbacks.on_test_batch_begin(step)
                test_step(batch)
                callbacks.on_test_batch_end(step, _metrics(model))
            val_logs = _metrics(model)
            callbacks.on_test_end(val_logs)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return model.history
