"""Stress benchmark: does the default fused model ever lose to its own parts?

Built from the AV-digits files (`av_digits.py`: a spoken digit of the Free
Spoken Digit Dataset paired with a degraded MNIST image; speaker-independent
folds, train on four speakers, test on the fifth), in variants made to look
unlike AV-digits and like the failures seen on held-out data:

- complementary: AV-digits as it is (each modality helps);
- useless image: every image is of a random digit (no signal at all);
- spurious image: each speaker's images follow their own shuffle of the
  digits, so the image predicts the label only for a speaker the model has
  heard (a signal that holds for the training speakers, not for new ones).
  The config names `data.group: speaker`, as the README tells a user to;
- few rows: 300 training rows;
- many classes: the label is the spoken digit and the written digit together
  (100 classes, each modality tells half of it).

No variant has a `data.val`: every run holds out its validation rows by
default (`data.val_split`). Every model is trained by `train(config)` (what
`mbm-keras train` runs) and scored by `evaluate` (what `mbm-keras evaluate`
runs) on the test speaker. The options, per variant and fold:

- default: the config leaves `train.balance` and `train.keep_best_of` unset
  (probe + keep the best on validation); its row is the kept model, and its
  `fusion` row the fusion it trained (what `keep_best_of: fusion` would ship);
- none: end to end from random weights, the fusion kept (the earlier default);
- unimodal: single models first, modality dropout 0.5, the fusion kept (the
  last default);
- image only / audio only: the default run's single models.

Target: in every variant the default's mean is at least the best single
model's mean minus the folds' spread (the larger of the two standard
deviations), and above it where the modalities complement each other.

Usage:
    python benchmarks/fusion_stress.py --data ../shared/data                 # 3 folds x 5 variants
    python benchmarks/fusion_stress.py --data ../shared/data --quick         # 1 fold, 4 epochs

Writes benchmarks/results/fusion_stress.md (+ .json); generated files go to
~/.cache/mbm_keras/ (`--work`), never into the repository.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import av_digits  # noqa: E402

VARIANTS = ("complementary", "useless image", "spurious image", "few rows", "many classes")
OPTIONS = ("default", "none", "unimodal")
SETTINGS = {"full": {"folds": ("george", "jackson", "theo"), "epochs": 8},
            "quick": {"folds": ("theo",), "epochs": 4}}
FEW_ROWS = 300


def variant_rows(table, variant, speaker, seed=0):
    """`(train rows, test rows)` of one variant and fold: dicts of image, audio, label, speaker."""
    rng = np.random.default_rng([seed, VARIANTS.index(variant)])
    pools = {}
    for pool in ("train", "test"):
        for r in table:
            pools.setdefault((pool, r["digit"]), []).append(r[f"image_{pool}"])
    speakers = sorted({r["speaker"] for r in table})
    shuffles = {s: rng.permutation(10) for s in speakers}  # spurious: each speaker's own digit -> image digit

    def row(r, pool):
        digit, label = r["digit"], str(r["digit"])
        if variant == "useless image":
            digit = int(rng.integers(10))
        elif variant == "spurious image":
            digit = int(shuffles[r["speaker"]][r["digit"]])
        elif variant == "many classes":
            digit = int(rng.integers(10))
            label = f"{r['digit']}{digit}"
        images = pools[(pool, digit)]
        image = r[f"image_{pool}"] if digit == r["digit"] else images[int(rng.integers(len(images)))]
        return {"image": image, "audio": r["audio_0"], "label": label, "speaker": r["speaker"]}

    train = [row(r, "train") for r in table if r["speaker"] != speaker]
    test = [row(r, "test") for r in table if r["speaker"] == speaker]
    if variant == "few rows":
        train = [train[i] for i in sorted(rng.choice(len(train), FEW_ROWS, replace=False))]
    return train, test


def write_rows(rows, root, path):
    """Writes `rows` (paths relative to the files' folder `root`) as the manifest `path`."""
    from mbm_keras.data import Manifest, write_manifest

    columns = ["image", "audio", "label", "speaker"]
    return write_manifest(Manifest(os.path.join(root, "table.csv"), rows, columns), path, path_columns=["image", "audio"])


def config(train_csv, out, option, epochs, variant):
    train = {"epochs": epochs, "seed": 0}
    if option != "default":
        train.update(balance=option, keep_best_of="fusion")
    data = {"train": train_csv, "columns": {"image": "image", "audio": "audio", "label": "label"},
            "preprocessing": {"image_size": [28, 28], "sample_rate": av_digits.SPEC["sample_rate"],
                              "audio_length": 4000},
            "batch_size": 32, "cache": "memory", "verify": "header"}
    if variant == "spurious image":
        data["group"] = "speaker"
    return {"data": data,
            "model": {"image": "small_cnn", "audio": "logmel_cnn", "audio_kwargs": {"hop_ms": 20.0},
                      "fusion": "concat", "fusion_kwargs": {"units": 64}, "dropout": 0.2},
            "train": train, "output": out}


def run_fold(table, folder, variant, speaker, settings, options, work):
    """{model: {"accuracy", "seconds"}} for one variant and fold."""
    from mbm_keras.evaluate import evaluate
    from mbm_keras.training import train

    stem = os.path.join(folder, f"stress-{variant.replace(' ', '_')}-{speaker}")  # beside the files (the data root)
    train_rows, test_rows = variant_rows(table, variant, speaker)
    train_csv = write_rows(train_rows, folder, stem + "-train.csv")
    test_csv = write_rows(test_rows, folder, stem + "-test.csv")
    results = {}
    for option in options:
        out = os.path.join(work, f"{variant}-{speaker}-{option}".replace(" ", "_"))
        t = time.perf_counter()
        result = train(config(train_csv, out, option, settings["epochs"], variant), verbose=0, overwrite=True)
        seconds = time.perf_counter() - t
        report = evaluate(out, test_csv, out=os.path.join(out, "eval-test.json"))
        results[option] = {"accuracy": report["accuracy"], "seconds": seconds,
                           "kept": result["summary"].get("kept_modality") or "fusion"}
        breakdown = report.get("modalities") or {}
        if option == "default":
            results["default: its fusion"] = {"accuracy": breakdown.get("fusion"), "seconds": None}
            for modality, accuracy in (breakdown.get("singles") or {}).items():
                results[f"{modality} only"] = {"accuracy": accuracy, "seconds": None}
        print(f"  [{variant} / {speaker}] {option:<9} {report['accuracy']:.1%} kept {results[option]['kept']}"
              f" ({seconds:.0f} s)" + "".join(f"  {m} {v:.1%}" for m, v in (breakdown.get('singles') or {}).items())
              + (f"  fusion {breakdown['fusion']:.1%}" if breakdown.get("fusion") is not None else ""), flush=True)
    return results


def summarize(per_fold):
    names = []
    for fold in per_fold.values():
        names += [n for n in fold if n not in names]
    out = {}
    for name in names:
        acc = [per_fold[f][name]["accuracy"] for f in per_fold if per_fold[f].get(name, {}).get("accuracy") is not None]
        sec = [per_fold[f][name]["seconds"] for f in per_fold if per_fold[f].get(name, {}).get("seconds") is not None]
        kept = [per_fold[f][name].get("kept") for f in per_fold if per_fold[f].get(name, {}).get("kept")]
        out[name] = {"mean": float(np.mean(acc)), "std": float(np.std(acc)),
                     "seconds": float(np.mean(sec)) if sec else None, "kept": kept}
    return out


def check(summary):
    singles = {k: v for k, v in summary.items() if k.endswith(" only")}
    best = max(singles, key=lambda k: singles[k]["mean"])
    spread = max(summary["default"]["std"], singles[best]["std"])
    margin = summary["default"]["mean"] - singles[best]["mean"]
    return {"best_single": best, "margin": margin, "spread": spread, "ok": margin >= -spread}


def format_table(results, settings):
    options = [o for o in ("default", "default: its fusion", "none", "unimodal") if o in next(iter(results.values()))["models"]]
    head = ["variant", "best single", *options, "default - best single", "kept (per fold)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * 2 + " ---: |" * (len(options) + 1) + " --- |"]
    for variant, summary in results.items():
        c = summary["check"]
        s = summary["models"]
        cells = [variant, f"{c['best_single']} {100 * s[c['best_single']]['mean']:.1f} ± {100 * s[c['best_single']]['std']:.1f}"]
        cells += [f"{100 * s[o]['mean']:.1f} ± {100 * s[o]['std']:.1f}" for o in options]
        cells.append(f"{100 * c['margin']:+.1f} ({'OK' if c['ok'] else 'MISSED'}, spread {100 * c['spread']:.1f})")
        cells.append(", ".join(s["default"]["kept"]))
        lines.append("| " + " | ".join(cells) + " |")
    seconds = {o: np.mean([r["models"][o]["seconds"] for r in results.values()]) for o in OPTIONS
               if o in next(iter(results.values()))["models"]}
    lines += ["", "Mean `train()` seconds per run: " + ", ".join(f"{o} {v:.0f}" for o, v in seconds.items())
              + f" ({os.cpu_count()} CPU cores)."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    av_digits.add_file_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="one fold (theo), 4 epochs")
    parser.add_argument("--folds", nargs="+", help="test speakers, e.g. --folds theo george")
    parser.add_argument("--epochs", type=int, help="train.epochs of every run")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--options", nargs="+", choices=OPTIONS, default=list(OPTIONS),
                        help="options to train besides the default (which always runs)")
    parser.add_argument("--reuse", help="a previous run's .json: its results of the options not trained now "
                        "(same variants, folds and epochs) join the table, e.g. --options default --reuse old.json "
                        "after a change that touches only the default")
    parser.add_argument("--out", help="markdown file (default: benchmarks/results/fusion_stress.md)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    if args.folds:
        settings["folds"] = tuple(args.folds)
    if args.epochs:
        settings["epochs"] = args.epochs
    options = ["default"] + [o for o in args.options if o != "default"]
    args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "fusion_stress-quick.md" if args.quick else "fusion_stress.md")
    start = time.time()
    try:
        table, info = av_digits.build_files(args.data, args.work)
    except (FileNotFoundError, ValueError) as e:
        parser.error(f"--data {args.data}: {e}")
    previous = {}
    if args.reuse:
        with open(args.reuse, encoding="utf-8") as f:
            old = json.load(f)
        if old["settings"]["epochs"] != settings["epochs"]:
            parser.error(f"--reuse {args.reuse}: trained {old['settings']['epochs']} epochs, not {settings['epochs']}")
        previous = old["per_fold"]
    results, raw = {}, {}
    with tempfile.TemporaryDirectory(prefix="stress-runs-") as work:
        for variant in args.variants:
            per_fold = {s: run_fold(table, info["folder"], variant, s, settings, options, work)
                        for s in settings["folds"]}
            for s, fold in per_fold.items():  # the options not trained now, from --reuse
                for name, value in previous.get(variant, {}).get(s, {}).items():
                    if name in OPTIONS and name not in options:
                        fold[name] = value
            models = summarize(per_fold)
            results[variant] = {"models": models, "check": check(models)}
            raw[variant] = per_fold
    command = "python benchmarks/fusion_stress.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.reuse:
        command += f"\n# {', '.join(o for o in OPTIONS if o not in options)}: from {os.path.basename(args.reuse)}"
    text = (f"Test accuracy (%) on held-out speakers, mean ± std over {len(settings['folds'])} fold(s) "
            f"({', '.join(settings['folds'])}); {settings['epochs']} epochs; no data.val (the default hold-out). "
            f"Images keep {info['pca_components']} PCA components, audio at {info['snr_db'][0]:+.0f} dB SNR.\n\n"
            + format_table(results, settings)
            + f"\n\nProduced by:\n\n```\n{command}\n```\n\nTotal time {(time.time() - start) / 60:.1f} min.\n")
    print(text, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        f.write("# Fusion stress benchmark\n\n" + text)
    os.replace(args.out + ".tmp", args.out)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "info": info, "results": results, "per_fold": raw}, f, indent=1)
    return 0 if all(r["check"]["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
