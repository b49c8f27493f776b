"""Task heads: the output layer plus the loss and metrics that go with it."""

import keras

from mbm_keras.registry import Registry

HEADS = Registry("head")


def register_head(name, description=""):
    """Class decorator registering a `Head` subclass under `name`.

    Args:
        name: the name `build_fusion_model(head=...)` takes.
        description: one line for listings.

    Examples:
        >>> @register_head("poisson")
        ... class PoissonHead(Head):
        ...     activation = "exponential"
        ...     def loss(self):
        ...         return keras.losses.Poisson()
        ...     def metrics(self):
        ...         return [keras.metrics.MeanAbsoluteError(name="mae")]
    """
    return HEADS.register(name, description=description)


def list_heads(pattern="*"):
    """Names of the registered heads.

    Args:
        pattern: shell-style wildcard on the name.

    Examples:
        >>> list_heads()
        ['linear', 'sigmoid', 'softmax']
    """
    return HEADS.list(pattern)


def get_head(name):
    """An instance of the head registered as `name`.

    Args:
        name: a name from `list_heads()`.

    Examples:
        >>> head = get_head("softmax")
        >>> model.compile("adam", loss=head.loss(), metrics=head.metrics())
    """
    return HEADS.get(name)()


class Head:
    """A task head: `predictions` layer, default loss and metrics.

    Subclasses set `activation` and `min_outputs` and implement `loss()` and
    `metrics()`. Outputs are float32 even under mixed precision.

    Examples:
        >>> head = get_head("sigmoid")
        >>> head.activation
        'sigmoid'
    """

    activation = None
    min_outputs = 1
    score = ("loss", "min")  # the metric that compares two models of this head, and which way is better

    def check_outputs(self, num_classes):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < self.min_outputs:
            raise ValueError(
                f"The {type(self).__name__} head needs num_classes >= {self.min_outputs}. "
                f"Received: num_classes={num_classes!r}"
            )

    def predictions(self, x, num_outputs, from_logits=False):
        """The output layer named `predictions`, applied to `x`.

        Args:
            x: fused features, or logits when `from_logits` (late fusion).
            num_outputs: classes or regression targets.
            from_logits: `x` already holds the logits; apply only the activation.
        """
        if from_logits:
            layer = keras.layers.Activation(self.activation or "linear", dtype="float32", name="predictions")
        else:
            layer = keras.layers.Dense(num_outputs, activation=self.activation, dtype="float32", name="predictions")
        return layer(x)

    def loss(self):
        raise NotImplementedError

    def metrics(self):
        raise NotImplementedError
