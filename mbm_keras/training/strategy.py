"""Choosing a `tf.distribute` strategy by name."""

import os

STRATEGIES = ("auto", "cpu", "mirrored", "tpu", "multi_worker")
# Set on Cloud TPU VMs, TPU nodes and Colab TPUs.
TPU_ENV = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID", "COLAB_TPU_ADDR")


def _tpu_strategy():
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError, RuntimeError) as e:
        raise RuntimeError(f"strategy 'tpu': no TPU found ({e})") from None
    return tf.distribute.TPUStrategy(resolver)


def _multi_worker_strategy():
    import json

    import tensorflow as tf

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "strategy 'multi_worker' needs the TF_CONFIG environment variable on every worker, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
        )
    try:
        spec = json.loads(raw)
        workers = spec["cluster"]["worker"]
        task = spec["task"]["type"], int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG must be JSON with cluster.worker and task.type/index ({e}). Received: TF_CONFIG={raw!r}") from None
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    print(f"multi_worker: task {task[0]} {task[1]} of {len(workers)} worker(s)", flush=True)
    return strategy


def worker_position(strategy):
    """`(index, count)` of this worker among a multi-worker cluster's workers
    (the chief first), as tf.distribute numbers its input pipelines."""
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    order = [("chief", i) for i in range(len(cluster.get("chief", [])))] + \
            [("worker", i) for i in range(len(cluster.get("worker", [])))]
    return order.index((resolver.task_type, resolver.task_id)), len(order)


def get_strategy(name="auto"):
    """Returns `(strategy, name actually used)`.

    - "auto": a TPU if one is reachable, else all GPUs (MirroredStrategy) if
      there are several, else the default strategy (one GPU or the CPU);
    - "cpu": the CPU only; "mirrored": MirroredStrategy over the local GPUs
      (or logical CPU devices); "tpu": TPUStrategy, an error if there is none.
    - "multi_worker": MultiWorkerMirroredStrategy over the cluster in the
      `TF_CONFIG` environment variable (required). Keras 3's `model.fit` fails
      under it (keras-team/keras#20585); `train()` uses
      `mbm_keras.training.distributed_fit` instead. Create it before any other
      TensorFlow work in the process (collective ops are set up at start-up).

    Args:
        name: one of STRATEGIES.

    Examples:
        >>> strategy, used = get_strategy("auto")
        >>> with strategy.scope():
        ...     model = build_fusion_model(...)
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "multi_worker":
        return _multi_worker_strategy(), "multi_worker"
    if name == "tpu":
        return _tpu_strategy(), "tpu"
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0"), "cpu"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), "mirrored"
    # auto: look for a TPU only where one can be (probing elsewhere can wait on the network).
    if any(os.environ.get(v) for v in TPU_ENV) or os.path.exists("/dev/accel0"):
        try:
            return _tpu_strategy(), "tpu"
        except RuntimeError:
            pass
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), "mirrored"
    return tf.distribute.get_strategy(), "gpu" if gpus else "cpu"
