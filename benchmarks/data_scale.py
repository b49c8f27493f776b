"""make_dataset start-up at scale: seconds to the first batch, peak memory and
steady-state examples/s for manifests of 10k, 100k and 1M rows.

The manifests repeat the demo's files (32x32 PNG, 0.25 s WAV, a caption) as
`write_demo_dataset` writes them, so the figures measure make_dataset's own
set-up, not file decoding. Each size runs in a fresh Python process (peak
memory is that process's maximum resident size).

Usage:
    python benchmarks/data_scale.py [--rows 10000 100000 1000000] [--verify none]
        [--work ~/.cache/mbm_keras/data_scale] [--steady-batches 40]
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_manifest(folder, rows):
    """A manifest of `rows` rows cycling through the demo dataset's rows."""
    from mbm_keras.demo.data import write_demo_dataset

    demo = write_demo_dataset(os.path.join(folder, "demo"))
    path = os.path.join(folder, f"manifest-{rows}.csv")
    if os.path.isfile(path):
        return path
    with open(demo, newline="") as f:
        source = list(csv.DictReader(f))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "audio", "text", "label"])
        for i in range(rows):
            r = source[i % len(source)]
            w.writerow([f"demo/{r['image']}", f"demo/{r['audio']}", r["text"], r["label"]])
    os.replace(tmp, path)
    return path


def measure(folder, rows, verify, steady_batches):
    """Runs in the child process: one size, one JSON line on stdout."""
    path = write_manifest(folder, rows)
    start = time.perf_counter()
    import tensorflow as tf  # noqa: F401

    from mbm_keras.data import fit_preprocessor, make_dataset

    imported = time.perf_counter()
    pre_path = os.path.join(folder, "preprocessor")
    if not os.path.isdir(pre_path):  # fitted once, on the demo rows (fitting is not start-up)
        pre = fit_preprocessor(os.path.join(folder, "demo", "manifest.csv"),
                               {"image": "image", "text": "text", "audio": "audio", "label": "label"},
                               image_size=(32, 32), text_length=16, sample_rate=8000, audio_length=2000)
        pre.save(pre_path)
    from mbm_keras.data import Preprocessor

    pre = Preprocessor.load(pre_path)
    t0 = time.perf_counter()
    ds = make_dataset(path, preprocessor=pre, training=True, batch_size=64, verify=verify, verbose=False)
    it = iter(ds)
    next(it)
    first = time.perf_counter() - t0
    for _ in range(5):  # warm-up
        next(it)
    t1 = time.perf_counter()
    for _ in range(steady_batches):
        next(it)
    steady = steady_batches * 64 / (time.perf_counter() - t1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"rows": rows, "verify": verify, "first_batch_s": round(first, 2), "peak_mb": round(peak),
                      "examples_per_s": round(steady), "import_s": round(imported - start, 1)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--verify", default="none", choices=["none", "header", "decode"])
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/mbm_keras/data_scale"))
    parser.add_argument("--steady-batches", type=int, default=40)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.child:
        return measure(args.work, args.child, args.verify, args.steady_batches)
    print(f"make_dataset start-up, verify={args.verify!r}, batch 64, training=True (shuffled), "
          f"demo files repeated; each size in a fresh process")
    print(f"{'rows':>10} {'first batch s':>14} {'peak MB':>8} {'examples/s':>11}")
    results = []
    for rows in args.rows:
        write_manifest(args.work, rows)  # not timed
        out = subprocess.run([sys.executable, __file__, "--child", str(rows), "--verify", args.verify,
                              "--work", args.work, "--steady-batches", str(args.steady_batches)],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the {rows}-row run failed (exit {out.returncode})")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['rows']:>10,} {r['first_batch_s']:>14.2f} {r['peak_mb']:>8,} {r['examples_per_s']:>11,}", flush=True)
    return results


if __name__ == "__main__":
    main()
