"""Batch-1 inference latency and file size of every deployment artifact of one model.

Side by side in one run, interleaved (each round times every runtime once, so
they share the machine's state): Keras `model(x)`, Keras `model.predict(x)`, the
SavedModel (`serve_tensors`), TFLite float32 / float16 / dynamic / int8
through `ai_edge_litert` (XNNPACK), and the ONNX export through ONNX Runtime
(CPU provider). Prints the median latency of each, ratios against Keras
`model(x)`, int8 against float32, and file sizes.

The model: MobileNetV3Small (or --image) image branch (224x224), BiLSTM text branch (32
tokens), log-mel CNN audio branch (1 s at 16 kHz), concat fusion, 10 classes;
random weights with BatchNorm statistics estimated on the inputs (latency and
size do not depend on the weights' values, but int8 delegation depends on the
activation ranges they give; see --untrained-batch-norm).

Usage:
    python benchmarks/inference.py [--runs 200] [--threads 2] [--image resnet50] [--untrained-batch-norm]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="timed calls per runtime (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TFLite threads (default: all cores)")
    parser.add_argument("--image", default="mobilenet_v3_small", help="image encoder (default: %(default)s)")
    parser.add_argument("--untrained-batch-norm", action="store_true",
                        help="keep freshly initialized BatchNorm statistics (int8 then partly leaves XNNPACK)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from mbm_keras import build_fusion_model
    from mbm_keras.deploy import convert_to_tflite, tflite_interpreter
    from mbm_keras.deploy.saved_model import tensor_signature

    keras.utils.set_random_seed(0)
    model = build_fusion_model(image=args.image, text="bilstm", audio="logmel_cnn", fusion="concat",
                               num_classes=10, image_shape=(224, 224, 3), text_length=32, vocab_size=5000,
                               audio_length=16000, sample_rate=16000, compile=False)
    rng = np.random.default_rng(0)
    calibrate_batch_norm = not args.untrained_batch_norm

    def example():
        return {"image": rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32"),
                "text": rng.integers(1, 5000, (1, 32)).astype("int32"),
                "audio": rng.uniform(-0.5, 0.5, (1, 16000)).astype("float32")}

    x = example()
    if calibrate_batch_norm:
        # Random weights stand in for trained ones (latency does not depend on their values), but the
        # BatchNorm statistics must match the activations: with freshly initialized statistics the deep
        # activations of MobileNetV3/ResNet50 shrink to ~1e-6, their int8 scales follow, and XNNPACK
        # refuses about 60 int8 ops whose scale ratios fall outside its range (20 partitions, reference
        # kernels between them), which a trained model never shows. One pass in training mode with
        # momentum 0 sets each layer's statistics to those of 16 inputs.
        norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
                 if isinstance(layer, keras.layers.BatchNormalization)]
        momenta = [layer.momentum for layer in norms]
        for layer in norms:
            layer.momentum = 0.0
        model({k: np.concatenate([example()[k] for _ in range(16)]) for k in x}, training=True)
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        print(f"BatchNorm statistics of {len(norms)} layers estimated on 16 inputs", flush=True)
    work = tempfile.mkdtemp(prefix="mbm_keras_inference-")
    print(f"Exporting ({model.count_params():,} parameters) to {work} ...", flush=True)
    saved = os.path.join(work, "saved_model")
    model.export(saved, format="tf_saved_model", input_signature=[tensor_signature(model)], verbose=False)
    loaded = tf.saved_model.load(saved)  # keep it referenced: its variables live as long as it does
    serve = loaded.serve
    files, runners = {}, {}
    for q in ("none", "float16", "dynamic", "int8"):
        path = os.path.join(work, f"model_{q}.tflite")
        t = time.time()
        convert_to_tflite(model, path, q, representative=[{k: v[0] for k, v in example().items()} for _ in range(32)])
        print(f"  tflite {q:<8} converted in {time.time() - t:.0f} s", flush=True)
        files[q] = path
        runner = tflite_interpreter(path, num_threads=args.threads).get_signature_runner()
        runners[f"TFLite {'float32' if q == 'none' else q} (XNNPACK)"] = (lambda r: lambda: r(**x))(runner)

    from mbm_keras.deploy.onnx import convert_to_onnx, onnx_session, run_onnx

    t = time.time()
    files["onnx"] = convert_to_onnx(model, os.path.join(work, "model.onnx"))
    print(f"  onnx            converted in {time.time() - t:.0f} s", flush=True)
    session = onnx_session(files["onnx"], num_threads=args.threads)
    runners["ONNX Runtime (CPU)"] = lambda: run_onnx(session, x)

    tensors = {k: tf.constant(v) for k, v in x.items()}
    contenders = {
        "Keras model(x)": lambda: model(x, training=False),
        "Keras model.predict(x)": lambda: model.predict(x, verbose=0),
        "SavedModel (tf.saved_model.load)": lambda: serve(tensors),
        **runners,
    }
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = next(iter(runners["TFLite float32 (XNNPACK)"]().values()))
    print(f"TFLite float32 vs Keras on the timed example: max |diff| = {np.abs(got - expected).max():.2e}")
    print(f"ONNX Runtime vs Keras on the timed example: max |diff| = {np.abs(run_onnx(session, x) - expected).max():.2e}")
    for fn in contenders.values():  # warm up
        for _ in range(5):
            fn()
    times = {k: [] for k in contenders}
    for _ in range(args.runs):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    median = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    keras_ms, float_ms = median["Keras model(x)"], median["TFLite float32 (XNNPACK)"]
    print(f"\nbatch-1 latency, median of {args.runs} interleaved runs ({os.cpu_count()} cores, TFLite threads={args.threads})")
    for name, ms in median.items():
        print(f"  {name:<36}{ms:9.2f} ms   {keras_ms / ms:6.1f}x vs Keras model(x)")
    print(f"TFLite float32 speed-up over Keras model(x) = {keras_ms / float_ms:.1f}x (target >= 5x)")
    int8_ms = median["TFLite int8 (XNNPACK)"]
    print(f"TFLite int8 / float32 latency = {int8_ms / float_ms:.2f} (target <= 0.8 for MobileNetV3Small, "
          f"<= 0.6 for ResNet50)")
    sizes = {q: os.path.getsize(p) for q, p in files.items() if q != "onnx"}
    saved_size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(saved) for f in fs)
    print("\nfile sizes")
    print(f"  {'SavedModel (folder)':<36}{saved_size / 1e6:9.2f} MB")
    for q, size in sizes.items():
        print(f"  {'TFLite ' + q:<36}{size / 1e6:9.2f} MB   {size / sizes['none']:.2f}x float")
    print(f"  {'ONNX':<36}{os.path.getsize(files['onnx']) / 1e6:9.2f} MB")
    print(f"int8 / float32 file size = {sizes['int8'] / sizes['none']:.2f} (target <= 0.3)")


if __name__ == "__main__":
    main()
