"""One cheap in-graph check for the decoders and the serving signature."""

import tensorflow as tf


def check(condition, pieces):
    """An assertion op: raises InvalidArgumentError "assertion failed: [piece] [piece]..."
    when `condition` is false. The pieces (strings and scalar tensors; never raw
    file bytes) are formatted only then, and unlike `tf.debugging.Assert` inside
    a traced function there is no cond around it: this runs for every example.
    `mbm_keras.deploy.raw_inputs.explain` joins the pieces back into one line.

    Example:
        >>> with tf.control_dependencies([check(n <= limit, ["audio of ", n, " samples is too long"])]):
        ...     samples = tf.identity(samples)
    """
    return tf.raw_ops.Assert(condition=condition, data=[tf.convert_to_tensor(p) for p in pieces], summarize=3)
