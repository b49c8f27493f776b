"""Does int8 pay on this CPU, and does it keep the model's answers?

Part 1, always: keras.applications backbones alone (random weights, BatchNorm
statistics estimated on 16 inputs), converted with TensorFlow Lite's stock
full-integer recipe (`Optimize.DEFAULT`, a representative dataset,
`TFLITE_BUILTINS_INT8`; no mbm_keras code), timed batch-1 with LiteRT's XNNPACK
side by side with their float32 conversion, interleaved. It separates what the
backbone costs in int8 on the machine from what our export adds.

Part 2, with `--data ../shared/data`: AV-digits (benchmarks/av_digits.py's files,
test speaker theo) with MobileNetV3Small on the images (32x32) and the log-mel
CNN on the audio, concat fusion, trained, then exported by
`mbm_keras.deploy.convert_to_tflite` in float32 and int8; top-1 agreement of
each TFLite file with Keras on every test example, accuracies, and batch-1
latency of both files.

Usage:
    python benchmarks/int8.py [--threads 2] [--runs 200] [--data ../shared/data [--epochs 6]]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BACKBONES = {
    "MobileNetV3Small": dict(name="MobileNetV3Small"),
    "MobileNetV3Small minimalistic (ReLU, no SE)": dict(name="MobileNetV3Small", minimalistic=True),
    "MobileNetV2": dict(name="MobileNetV2"),
}


def timed(runners, runs):
    """Median ms of each runner, interleaved (each round calls every runner once)."""
    for fn in runners.values():
        for _ in range(5):
            fn()
    times = {k: [] for k in runners}
    for _ in range(runs):
        for name, fn in runners.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def estimate_batch_norm(model, inputs):
    import keras

    norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(inputs, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def stock_recipe(args):
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    print(f"Part 1: keras.applications backbones at 224x224, TFLite's stock int8 recipe, XNNPACK, "
          f"{args.threads} thread(s), median of {args.runs}")
    for label, spec in BACKBONES.items():
        keras.utils.set_random_seed(0)
        spec = dict(spec)
        model = getattr(keras.applications, spec.pop("name"))(weights=None, input_shape=(224, 224, 3), classes=10, **spec)
        estimate_batch_norm(model, rng.uniform(0, 255, (16, 224, 224, 3)).astype("float32"))
        with tempfile.TemporaryDirectory() as work:
            model.export(work, format="tf_saved_model", verbose=False)
            blobs = {}
            for q in ("float32", "int8"):
                converter = tf.lite.TFLiteConverter.from_saved_model(work)
                if q == "int8":
                    converter.optimizations = [tf.lite.Optimize.DEFAULT]
                    converter.representative_dataset = lambda: (
                        [rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")] for _ in range(32))
                    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                blobs[q] = converter.convert()
        x = rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")
        runners = {}
        for q, blob in blobs.items():
            runner = Interpreter(model_content=blob, num_threads=args.threads).get_signature_runner()
            key = next(iter(runner.get_input_details()))
            runners[q] = (lambda r, k: lambda: r(**{k: x}))(runner, key)
        ms = timed(runners, args.runs)
        print(f"  {label:<46} float32 {ms['float32']:6.2f} ms   int8 {ms['int8']:6.2f} ms   "
              f"int8/float32 = {ms['int8'] / ms['float32']:.2f}", flush=True)


def av_digits(args):
    import keras

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from av_digits import SPEC, build_files, fold_manifests

    from mbm_keras import build_fusion_model
    from mbm_keras.data import fit_preprocessor, make_dataset
    from mbm_keras.deploy import convert_to_tflite, tflite_interpreter

    table, info = build_files(args.data, args.work, verbose=True)
    train_manifest, tests = fold_manifests(table, info["folder"], "theo")
    pre = fit_preprocessor(train_manifest, {"image": "image", "audio": "audio", "label": "label"},
                           image_size=(args.image_size, args.image_size), sample_rate=SPEC["sample_rate"], audio_length=4000)
    common = dict(preprocessor=pre, batch_size=32, seed=SPEC["seed"], cache="memory")
    keras.utils.set_random_seed(SPEC["seed"])
    model = build_fusion_model(image=args.image, audio="logmel_cnn", fusion="concat", dropout=0.2,
                               audio_kwargs={"hop_ms": 20.0}, **pre.model_kwargs())
    print(f"\nPart 2: AV-digits (test speaker theo): {args.image} {args.image_size}x{args.image_size} + log-mel CNN, "
          f"concat, {args.epochs} epochs", flush=True)
    t = time.perf_counter()
    model.fit(make_dataset(train_manifest, training=True, **common), epochs=args.epochs, verbose=0)
    print(f"  trained in {time.perf_counter() - t:.0f} s", flush=True)
    calibration = [x for x, _ in make_dataset(train_manifest, **common).unbatch().take(128).as_numpy_iterator()]
    test = [(x, y) for x, y in make_dataset(tests["both"], **common).unbatch().as_numpy_iterator()]
    keras_top1 = np.concatenate([model.predict({k: np.stack([x[k] for x, _ in test[i:i + 64]]) for k in test[0][0]},
                                               verbose=0).argmax(-1) for i in range(0, len(test), 64)])
    labels = np.array([y for _, y in test])
    print(f"  Keras accuracy on {len(test)} test examples: {np.mean(keras_top1 == labels):.1%}")
    runners = {}
    with tempfile.TemporaryDirectory() as work:
        for q in ("none", "int8"):
            path = os.path.join(work, f"{q}.tflite")
            convert_to_tflite(model, path, q, representative=calibration)
            runner = tflite_interpreter(path, num_threads=args.threads).get_signature_runner()
            top1 = np.array([next(iter(runner(**{k: v[None] for k, v in x.items()}).values())).argmax(-1)[0]
                             for x, _ in test])
            name = "float32" if q == "none" else q
            print(f"  TFLite {name:<8} accuracy {np.mean(top1 == labels):.1%}, top-1 agreement with Keras "
                  f"{np.mean(top1 == keras_top1):.1%} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)
            x = {k: v[None] for k, v in test[0][0].items()}
            runners[name] = (lambda r, x: lambda: r(**x))(runner, x)
        ms = timed(runners, args.runs)
    print(f"  batch-1 latency: float32 {ms['float32']:.2f} ms, int8 {ms['int8']:.2f} ms, "
          f"int8/float32 = {ms['int8'] / ms['float32']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TFLite threads (default: all cores)")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per file (default: %(default)s)")
    parser.add_argument("--data", help="folder with fsdd/ and mnist/ for part 2, e.g. ../shared/data")
    parser.add_argument("--work", default=os.path.join(os.path.expanduser("~"), ".cache", "mbm_keras"),
                        help="where part 2's generated files go (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=6, help="part 2's training epochs (default: %(default)s)")
    parser.add_argument("--image", default="mobilenet_v3_small", help="part 2's image encoder (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=32, help="part 2's image side (default: %(default)s)")
    parser.add_argument("--skip-backbones", action="store_true", help="part 2 only")
    args = parser.parse_args()
    if not args.skip_backbones:
        stock_recipe(args)
    if args.data:
        av_digits(args)


if __name__ == "__main__":
    main()
