"""make_dataset throughput of two checkouts of mbm_keras, interleaved in one run.

Each measurement is a fresh process (so neither side warms the other's
caches): set-up time, best examples/s and least CPU-ms per example over 5
epochs of image+text+audio batches, training mode, on the files that
`benchmarks/data_pipeline.py` writes. Old and new alternate, and the medians
are printed: on a shared machine, compare the two, not the absolute figures.

Usage:
    git worktree add /tmp/old <commit>
    python benchmarks/make_dataset_ab.py --old /tmp/old --new . [--verify header] [--rounds 5]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

ONE = r"""
import os, resource, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
sys.path.insert(0, sys.argv[1])
import inspect
from mbm_keras.data import fit_preprocessor, make_dataset
if not inspect.getfile(make_dataset).startswith(os.path.join(sys.argv[1], "")):
    sys.exit(f"imported {inspect.getfile(make_dataset)}, not the checkout in {sys.argv[1]}")
manifest, verify = sys.argv[2], sys.argv[3]
pre = fit_preprocessor(manifest, {"image": "img", "text": "caption", "audio": "wav", "label": "label"},
                       image_size=(224, 224), sample_rate=16000, audio_length=16000)
start = time.time()
ds = make_dataset(manifest, preprocessor=pre, batch_size=32, training=True, verify=verify)
setup = time.time() - start

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

rate, cost = 0.0, 1e9
for _ in range(5):
    t, c = time.time(), cpu()
    n = sum(len(y) for _, y in ds)
    rate, cost = max(rate, n / (time.time() - t)), min(cost, (cpu() - c) / n * 1000)
print(f"RESULT {setup:.2f} {rate:.1f} {cost:.3f}")
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="folder of the first checkout (holding mbm_keras/)")
    parser.add_argument("--new", default=".", help="folder of the second checkout (default: this one)")
    parser.add_argument("--verify", default="header", choices=["decode", "header", "none"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--data", default="/tmp/mbm_keras_bench_data")
    args = parser.parse_args()
    for side in ("old", "new"):
        tree = getattr(args, side)
        if not os.path.isfile(os.path.join(tree, "mbm_keras", "__init__.py")):
            parser.error(f"--{side} {tree}: no mbm_keras/ package in that folder (a checkout of this repository)")

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from data_pipeline import write_files

    manifest = write_files(args.data, args.rows, (640, 480), 16000)
    results = {"old": [], "new": []}
    for i in range(args.rounds):
        for side in ("old", "new"):
            proc = subprocess.run([sys.executable, "-c", ONE, os.path.realpath(getattr(args, side)), manifest, args.verify],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"the {side} run failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-5:]))
            setup, rate, cost = map(float, re.search(r"RESULT (\S+) (\S+) (\S+)", proc.stdout).groups())
            results[side].append((setup, rate, cost))
            print(f"round {i + 1} {side}: set-up {setup:.1f} s, {rate:.0f} examples/s, {cost:.2f} CPU-ms/example", flush=True)
    print(f"\nmedians over {args.rounds} rounds (verify={args.verify!r}, {args.rows} rows, 640x480 JPEG + 1 s WAV + text):")
    for side, rows in results.items():
        setup, rate, cost = (statistics.median(r[k] for r in rows) for k in range(3))
        print(f"  {side}: set-up {setup:.1f} s, {rate:.0f} examples/s, {cost:.2f} CPU-ms/example")
    old, new = (statistics.median(r[1] for r in results[s]) for s in ("old", "new"))
    print(f"  new/old examples/s: {new / old:.2f}")


if __name__ == "__main__":
    main()
