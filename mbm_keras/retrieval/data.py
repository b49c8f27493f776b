"""Batches for contrastive training: every feature of both towers, and what makes two examples a match."""


def contrastive_dataset(dataset, supervised=None):
    """`(features, match)` batches for `ContrastiveLoss` from `make_dataset`'s.

    Args:
        dataset: batches of `features` or `(features, labels)`, holding the
            features of both towers (one manifest row: a query and its
            candidate).
        supervised: True: examples of the same label are positives of each
            other (needs labels); False: each query matches its own row's
            candidate only (labels ignored); None: True when the batches have
            labels.

    Returns:
        A `tf.data.Dataset` of `(features, match)`: the label, or a distinct
        id per example of a batch.

    Examples:
        >>> train = contrastive_dataset(make_dataset("pairs.csv", preprocessor=pre, training=True))
    """
    import tensorflow as tf

    labelled = isinstance(dataset.element_spec, tuple)
    if supervised and not labelled:
        raise ValueError("supervised=True needs labels: fit the preprocessor with a 'label' column")
    supervised = labelled if supervised is None else supervised

    def pair(*element):
        x = element[0]
        if supervised:
            return x, tf.cast(element[1], tf.int64)
        return x, tf.range(tf.shape(next(iter(x.values())))[0], dtype=tf.int64)

    from mbm_keras.data.pipeline import carry_attributes

    return carry_attributes(dataset, dataset.map(pair))
