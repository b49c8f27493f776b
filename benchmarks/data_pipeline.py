"""Data pipeline throughput: mbm_keras.data.make_dataset vs a plain Python loader.

Writes a dataset of real files (JPEG photos of --source-size, 1 s WAV clips,
captions in a CSV), to be resized to --image-size,
then, side by side in one run:
  1. examples/s of image+text+audio batches from `make_dataset` (tf.data,
     parallel decode, no cache) and from a plain loader doing the same work one
     example at a time (PIL, soundfile, numpy, a Python tokenizer);
  2. seconds per training epoch of the same fusion model fed by the pipeline
     and by tensors already in memory.

Usage:
    python benchmarks/data_pipeline.py [--rows 1000] [--image-size 224] [--source-size 640x480]
"""

import argparse
import csv
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def write_files(folder, rows, source, sample_rate, seed=0):
    from PIL import Image

    manifest = os.path.join(folder, "manifest.csv")
    if os.path.isfile(manifest):
        return manifest
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    os.makedirs(os.path.join(folder, "wav"), exist_ok=True)
    import soundfile

    rng = np.random.default_rng(seed)
    words = "the a cat dog bird sat ran flew over under near big small red blue green old new".split()
    records = []
    for i in range(rows):
        label = i % 4
        # Smooth random images (JPEG-friendly, like photos), source = (width, height).
        low = rng.uniform(0, 255, (source[1] // 16, source[0] // 16, 3)).astype(np.uint8)
        Image.fromarray(low).resize(source, Image.BILINEAR).save(os.path.join(folder, "img", f"{i}.jpg"), quality=90)
        t = np.arange(sample_rate) / sample_rate
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t) + 0.05 * rng.normal(size=t.shape)
        soundfile.write(os.path.join(folder, "wav", f"{i}.wav"), wav.astype(np.float32), sample_rate, subtype="PCM_16")
        records.append({"img": f"img/{i}.jpg", "wav": f"wav/{i}.wav", "caption": " ".join(rng.choice(words, 12)), "label": f"class{label}"})
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    return manifest


class PlainLoader:
    """What a user would write by hand: one example at a time, PIL + soundfile + numpy."""

    def __init__(self, manifest, pre):
        import csv as _csv

        self.root = os.path.dirname(manifest)
        with open(manifest, newline="") as f:
            self.rows = list(_csv.DictReader(f))
        self.size = pre.options["image_size"]
        self.rate, self.length = pre.options["sample_rate"], pre.options["audio_length"]
        self.vocab = {w: i for i, w in enumerate(pre.tokenizer.vocabulary)}
        self.text_length = pre.tokenizer.length
        self.classes = {c: i for i, c in enumerate(pre.labels.classes)}

    def example(self, row):
        import soundfile
        from PIL import Image

        img = Image.open(os.path.join(self.root, row["img"])).convert("RGB").resize(self.size[::-1], Image.BILINEAR)
        image = np.asarray(img, np.float32)
        data, rate = soundfile.read(os.path.join(self.root, row["wav"]), dtype="float32", always_2d=True)
        audio = data.mean(axis=1)
        if rate != self.rate:
            n = int(np.ceil(len(audio) * self.rate / rate))
            audio = np.interp(np.arange(n) * rate / self.rate, np.arange(len(audio)), audio).astype(np.float32)
        audio = np.pad(audio, (0, max(0, self.length - len(audio))))[: self.length]
        ids = [self.vocab.get(w, 1) for w in row["caption"].lower().split()][: self.text_length]
        text = np.array(ids + [0] * (self.text_length - len(ids)), np.int32)
        return image, text, audio, self.classes[row["label"]]

    def batches(self, batch_size):
        for start in range(0, len(self.rows), batch_size):
            ex = [self.example(r) for r in self.rows[start : start + batch_size]]
            yield {"image": np.stack([e[0] for e in ex]), "text": np.stack([e[1] for e in ex]), "audio": np.stack([e[2] for e in ex])}, np.array([e[3] for e in ex])


def examples_per_second(batches):
    start, n = time.perf_counter(), 0
    for x, _ in batches:
        n += len(x["image"])
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224, help="model input size")
    parser.add_argument("--source-size", default="640x480", help="WIDTHxHEIGHT of the JPEG files (default: a typical photo)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="epochs measured per loader (best is kept)")
    parser.add_argument("--out", default="/tmp/mbm_keras_bench_data")
    parser.add_argument("--loading-only", action="store_true", help="skip the training comparison")
    args = parser.parse_args()

    import tensorflow as tf

    from mbm_keras import build_fusion_model
    from mbm_keras.data import fit_preprocessor, make_dataset

    source = tuple(int(v) for v in args.source_size.lower().split("x"))
    folder = os.path.join(args.out, f"rows{args.rows}-source{source[0]}x{source[1]}")
    t = time.time()
    manifest = write_files(folder, args.rows, source, 16000)
    print(
        f"dataset: {args.rows} rows ({source[0]}x{source[1]} JPEG -> {args.image_size}x{args.image_size}, "
        f"1 s 16 kHz WAV, caption) in {folder} [{time.time() - t:.0f} s]"
    )
    print(f"cpu cores: {os.cpu_count()}")
    cols = {"image": "img", "text": "caption", "audio": "wav", "label": "label"}
    pre = fit_preprocessor(manifest, cols, image_size=(args.image_size, args.image_size), text_length=16,
                           sample_rate=16000, audio_length=16000)
    pipeline = make_dataset(manifest, preprocessor=pre, batch_size=args.batch_size, verify="header")
    plain = PlainLoader(manifest, pre)

    # 1. Loading only, alternating so both see the same machine state.
    rates = {"make_dataset": [], "plain loader": []}
    for _ in range(args.repeats):
        rates["make_dataset"].append(examples_per_second(pipeline))
        rates["plain loader"].append(examples_per_second(plain.batches(args.batch_size)))
    best = {k: max(v) for k, v in rates.items()}
    print("\n1. loading image+text+audio batches (examples/s, best of %d epochs)" % args.repeats)
    for k, v in best.items():
        print(f"   {k:<14}{v:10.1f}")
    print(f"   speed-up: {best['make_dataset'] / best['plain loader']:.2f}x (target >= 3x)")

    if args.loading_only:
        return
    # 2. Training fed by the pipeline vs by tensors in memory.
    x_mem, y_mem = [], []
    for x, y in pipeline:
        x_mem.append({k: v.numpy() for k, v in x.items()})
        y_mem.append(y.numpy())
    memory = tf.data.Dataset.from_tensor_slices(
        ({k: np.concatenate([b[k] for b in x_mem]) for k in x_mem[0]}, np.concatenate(y_mem))
    ).batch(args.batch_size).prefetch(tf.data.AUTOTUNE)
    model = build_fusion_model(image="small_cnn", text="cnn", audio="logmel_cnn", **pre.model_kwargs())
    model.fit(memory, epochs=1, verbose=0)  # trace once
    seconds = {"in memory": [], "make_dataset": [], "make_dataset (cache)": []}
    cached = make_dataset(manifest, preprocessor=pre, batch_size=args.batch_size, verify="none", cache="memory")
    model.fit(cached, epochs=1, verbose=0)  # fills the cache
    for _ in range(args.repeats):
        for name, ds in (("in memory", memory), ("make_dataset", pipeline), ("make_dataset (cache)", cached)):
            t = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            seconds[name].append(time.perf_counter() - t)
    fastest = {k: min(v) for k, v in seconds.items()}
    print("\n2. one training epoch of small_cnn + cnn + logmel_cnn (seconds, best of %d)" % args.repeats)
    for k, v in fastest.items():
        print(f"   {k:<22}{v:8.2f}   {100 * (v / fastest['in memory'] - 1):+6.1f}% vs in memory")
    print("   target: pipeline-fed step no more than 5% slower than in memory")


if __name__ == "__main__":
    main()
