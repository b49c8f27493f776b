"""Integrated gradients (Sundararajan et al. 2017): which pixels, words, sounds and cells made an answer.

For each example the inputs travel a straight path from a baseline to themselves; the gradients of the
explained output along it, times the distance travelled, are each input element's attribution. They sum to
`f(x) - f(baseline)` (completeness); the step count is doubled until they do within `tolerance`.

Every feature travels at once (the baseline is every feature's own), on its differentiable input:
- image: the pixels (baseline: black, or `blur`: the image blurred);
- audio: the normalized log-mel frames its encoder computes (`mel_norm`'s output, `(frames, mels)`; baseline:
  silence's, every frame flat). A log-mel and its normalization are scale-invariant, so a path of waveforms
  from silence would be flat, then jump at silence, and break completeness. An encoder of raw samples
  (`conv1d`) is explained on the samples;
- sensor series: the samples (baseline: zeros);
- tabular: the standardized cells (baseline: zeros, the training means);
- text: the token embeddings (baseline: the padding token's embedding at every position), summed per token.
Masks stay as given (a present feature stays present).

Gradients come from the backend that runs the model (TensorFlow's tape or `jax.grad`).
"""

import contextlib
import dataclasses

import keras
import numpy as np

from mbm_keras.explain.shapley import explained_features


@dataclasses.dataclass
class Attributions:
    """Integrated gradients of one example.

    Attributes:
        features: `{feature: attribution array}`: the input's shape for images, series and cells (the
            attribution of each element), `(tokens,)` for text (each token's embedding summed), the
            spectrogram's shape for audio (as its layer outputs it; `audio_frames` sums it per frame).
        target: the explained output column.
        output: `f(x)`, the explained output.
        baseline_output: `f(baseline)`.
        steps: the step count that met the tolerance (or the most tried).
        error: `|sum of attributions - (output - baseline_output)| / max(|output - baseline_output|, 1e-6)`.
        points: `{feature: what was attributed}`: the input, or the inner layer's output (the token
            embeddings, the normalized log-mel frames) for the example.
    """

    features: dict
    target: int
    output: float
    baseline_output: float
    steps: int
    error: float
    points: dict = dataclasses.field(default_factory=dict)

    def totals(self):
        """`{feature: sum of its attributions}` (they add up to `output - baseline_output`)."""
        return {f: float(np.sum(a)) for f, a in self.features.items()}


def _backend_gradient(function, values):
    """The gradients of `function(values) -> (batch,)` summed, with respect to each of `values` (a dict)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        values = {k: tf.convert_to_tensor(v) for k, v in values.items()}
        with tf.GradientTape() as tape:
            tape.watch(list(values.values()))
            total = tf.reduce_sum(function(values))
        return {k: g.numpy() for k, g in tape.gradient(total, values).items()}
    if backend == "jax":  # Keras on JAX: pip install "mbm_keras[jax]"
        import jax

        return {k: np.asarray(g) for k, g in jax.grad(lambda v: function(v).sum())(values).items()}
    raise NotImplementedError(f"integrated gradients need the tensorflow or jax backend, not {backend!r}")


def encoder_of(model, feature):
    """The layer that encodes `feature`: the one named `<feature>_encoder` at any depth (a retrieval tower
    holds its encoders two models down), else the `*_encoder` layer that reads the model's input `feature`
    (a transcription model's context is read by `context_encoder`); None when neither is there."""
    found = _named(model, f"{feature}_encoder")
    if found is not None:
        return found
    tensor = model.input.get(feature) if isinstance(model.input, dict) else None
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            if layer.name.endswith("_encoder") and any(t is tensor for t in node.input_tensors):
                return layer
    return None


def _named(model, name):
    for layer in getattr(model, "layers", []):
        if layer.name == name:
            return layer
        found = _named(layer, name) if isinstance(layer, keras.Model) else None
        if found is not None:
            return found
    return None


def inner_layer(model, feature, kinds):
    """The first layer of `kinds` (classes) inside `feature`'s encoder, or None: where its differentiable
    input is (the token embeddings, the log-mel spectrogram)."""
    encoder = encoder_of(model, feature)
    if encoder is None:
        return None
    layers = encoder._flatten_layers() if hasattr(encoder, "_flatten_layers") else encoder.layers
    return next((layer for layer in layers if isinstance(layer, kinds)), None)


def _inner_layers(model, features, example):
    """`{feature: layer}` of the features explained inside their encoder: integer inputs at their Embedding,
    audio at its normalized log-mel frames."""
    from mbm_keras.encoders.audio import FRONT_END_LAYERS

    inner = {}
    for feature in features:
        if not np.issubdtype(example[feature].dtype, np.floating):
            layer = inner_layer(model, feature, keras.layers.Embedding)
            if layer is None:
                raise ValueError(f"feature {feature!r} has integer inputs and no Embedding layer in its encoder "
                                 f"('{feature}_encoder') to take gradients at")
            inner[feature] = layer
            continue
        try:
            inner[feature] = encoder_of(model, feature).get_layer(FRONT_END_LAYERS[-1])
        except (ValueError, AttributeError):
            pass  # no log-mel front end: the input itself
    shared = [f for f in inner if sum(layer is inner[f] for layer in inner.values()) > 1]
    if shared:
        raise ValueError(f"features {shared} are encoded by one shared layer ({inner[shared[0]].name!r}: "
                         f"share_towers=True); their attributions cannot be taken apart there")
    return inner


@contextlib.contextmanager
def _inner_on_path(layers, paths):
    """While active, each `layers[feature]` returns `base + alpha * (e - base) + delta` (e: its output, base:
    its output for a zero input: the padding tokens, silence) with `paths[feature]` = `{"alpha": (batch,),
    "delta": tensor}`: the feature's point on the path, and what the gradient is taken with respect to."""
    from keras import ops

    originals = {}
    for feature, layer in layers.items():
        original = layer.call

        def call(inputs, original=original, feature=feature):
            e = original(inputs)
            base = original(ops.zeros_like(inputs))  # padding tokens; a flat spectrogram
            path = paths[feature]
            if "record" in path:  # the endpoints, for the attributions' (e - base)
                path["record"].update(e=ops.convert_to_numpy(e), base=ops.convert_to_numpy(base))
            alpha = ops.reshape(ops.cast(path["alpha"], e.dtype), (-1,) + (1,) * (len(e.shape) - 1))
            return base + alpha * (e - base) + path["delta"]

        originals[feature] = layer.__dict__.get("call")
        object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        for feature, layer in layers.items():
            if originals[feature] is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", originals[feature])


def integrated_gradients(model, example, target=None, baselines=None, steps=32, max_steps=1024, tolerance=0.01,
                         smoothgrad=0, noise=0.1, seed=0):
    """Integrated gradients of one example.

    Args:
        model: a functional Keras model of named feature inputs.
        example: `{input: array}` of ONE example (leading batch axis of 1, or none), masks included.
        target: the explained output column (None: the predicted class; a single output: 0).
        baselines: `{feature: array or "black" / "blur" / "zeros"}` for float inputs (default: zeros, i.e.
            black pixels, silence, the training means of standardized cells); a text feature's baseline is
            the padding token's embedding.
        steps: the first step count; doubled until completeness holds within `tolerance`, up to `max_steps`.
        tolerance: the largest relative completeness error taken.
        smoothgrad: with n > 0, the attributions averaged over n copies of the example with Gaussian noise
            (`noise` times each float input's standard deviation) added (SmoothGrad, Smilkov et al. 2017).
        seed: the noise's seed.

    Returns:
        `Attributions`.

    Examples:
        >>> a = integrated_gradients(model, {k: v[:1] for k, v in batch.items()})
        >>> a.totals(), a.error
    """
    from keras import ops

    features, _ = explained_features(model)
    example = {k: np.asarray(v) for k, v in example.items()}
    example = {k: v if v.ndim and v.shape[0] == 1 else v[None] for k, v in example.items()}
    output = np.asarray(model.predict(example, verbose=0), np.float64).reshape(1, -1)
    target = int(np.argmax(output[0])) if target is None and output.shape[1] > 1 else int(target or 0)
    texts = _inner_layers(model, features, example)  # explained at an inner layer's output
    floats = [f for f in features if f not in texts]
    ends = {f: {} for f in texts}  # each inner layer's output for the example, and for its baseline
    paths = {f: {"alpha": np.ones(1, np.float32), "delta": 0.0, "record": ends[f]} for f in texts}
    with _inner_on_path(texts, paths):
        model({k: keras.ops.convert_to_tensor(v) for k, v in example.items()}, training=False)
    base = {f: _baseline(f, example[f], (baselines or {}).get(f)) for f in floats}

    def path_outputs(alphas, points):
        """The explained output at `alphas` (one per row), and the gradients at those points."""
        n = len(alphas)
        batch = {k: np.repeat(v, n, axis=0) for k, v in points.items()}
        for f in floats:
            batch[f] = (base[f] + alphas.reshape((-1,) + (1,) * (points[f].ndim - 1)) * (points[f] - base[f])
                        ).astype(np.float32)
        paths = {f: {"alpha": alphas.astype(np.float32)} for f in texts}
        deltas = {}
        for f in texts:
            deltas[f"{f}__delta"] = np.zeros((n, *ends[f]["e"].shape[1:]), np.float32)

        def forward(values):
            for f in texts:
                paths[f]["delta"] = values[f"{f}__delta"]
            x = {k: ops.convert_to_tensor(v) for k, v in {**batch, **{f: values[f] for f in floats}}.items()}
            y = model(x, training=False)
            return ops.take(ops.reshape(y, (n, -1)), target, axis=1)

        with _inner_on_path(texts, paths):
            grads = _backend_gradient(forward, {**{f: batch[f] for f in floats}, **deltas})
        return grads

    rng = np.random.default_rng(seed)
    copies = [example] + [_noisy(example, floats, noise, rng) for _ in range(smoothgrad)]
    attributions, tried = None, steps
    while True:
        attributions = [_integrate(path_outputs, copy, floats, texts, base, tried, ends) for copy in copies]
        mean = {f: np.mean([a[f] for a in attributions], axis=0) for f in features}
        f_x = _explained(model, copies[0], target)
        f_base = _explained(model, _baseline_example(copies[0], floats, base, texts), target, texts)
        gap = f_x - f_base
        error = abs(sum(float(np.sum(mean[f])) for f in features) - gap) / max(abs(gap), 1e-6)
        if smoothgrad or error <= tolerance or tried >= max_steps:
            points = {f: (ends[f]["e"][0] if f in ends else example[f][0]) for f in features}
            return Attributions(mean, target, f_x, f_base, tried, error, points)
        tried *= 2


def _integrate(path_outputs, example, floats, texts, base, steps, ends):
    """Trapezoid rule over `steps` intervals of the path: `{feature: attributions}`."""
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2
    total = {}
    for start in range(0, steps + 1, 64):  # up to 64 points of the path per model call
        chunk = slice(start, start + 64)
        grads = path_outputs(alphas[chunk], example)
        for key, g in grads.items():
            w = weights[chunk].reshape((-1,) + (1,) * (g.ndim - 1))
            total[key] = total.get(key, 0) + np.sum(w * g, axis=0)
    out = {f: total[f] * (example[f][0] - base[f][0]) for f in floats}
    for f, layer in texts.items():
        out[f] = total[f"{f}__delta"] * (ends[f]["e"][0] - ends[f]["base"][0])
        if isinstance(layer, keras.layers.Embedding):
            out[f] = out[f].sum(axis=-1)  # per token
    return out


def _explained(model, example, target, texts=None):
    from keras import ops

    example = {k: ops.convert_to_tensor(v) for k, v in example.items()}
    if texts:
        paths = {f: {"alpha": np.zeros(1, np.float32), "delta": 0.0} for f in texts}
        with _inner_on_path(texts, paths):
            y = model(example, training=False)
    else:
        y = model(example, training=False)
    return float(np.asarray(y).reshape(1, -1)[0, target])


def _baseline_example(example, floats, base, texts):
    return {**example, **{f: base[f] for f in floats}}


def _baseline(feature, x, how):
    if how is None or (isinstance(how, str) and how in ("zeros", "black", "silence")):
        return np.zeros_like(x, np.float32)
    if isinstance(how, str) and how == "blur":
        return _blur(x)
    if isinstance(how, str):
        raise ValueError(f"baselines[{feature!r}] must be an array, 'zeros', 'black' or 'blur'. Received: {how!r}")
    how = np.asarray(how, np.float32)
    return how if how.shape == x.shape else np.broadcast_to(how, x.shape).astype(np.float32)


def _blur(x, passes=3):
    """A box blur of `(1, height, width, channels)` images: 5x5, `passes` times."""
    if x.ndim != 4:
        raise ValueError("baseline 'blur' is for images (height, width, channels)")
    out = x.astype(np.float32)
    for _ in range(passes):
        padded = np.pad(out, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
        out = sum(padded[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(5) for j in range(5)) / 25.0
    return out


def _noisy(example, floats, noise, rng):
    out = dict(example)
    for f in floats:
        scale = noise * (float(np.std(example[f])) or 1.0)
        out[f] = (example[f] + rng.normal(0, scale, example[f].shape)).astype(np.float32)
    return out
