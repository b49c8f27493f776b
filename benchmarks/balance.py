"""Balanced fusion benchmark: does `train.balance` keep a fusion at or above its
best modality when one modality is weak? Everything goes through
`mbm_keras.training.train(config)` (what `mbm-keras train` runs) and
`mbm_keras.evaluate.evaluate` (what `mbm-keras evaluate` runs).

The AV-digits pairs of `av_digits.py` (a spoken digit from the Free Spoken
Digit Dataset with a handwritten MNIST image of the same digit; speaker-
independent folds: train on four speakers, test on the fifth) in three
variants, built from the same recordings and images with the same folds:

- normal: images keep the PCA components of 25% of the pixel energy, audio at
  0 dB SNR (the AV-digits benchmark's own setting);
- weak audio: the same images, audio at -12 dB SNR, so that audio alone is weak;
- weak images: images keep 8% of the energy (one or two components), audio at
  0 dB, so that images alone are weak.

For each variant and fold it trains concat and gated fusions under every
`train.balance` ("none", "unimodal", "ogm_ge"; 8 epochs each, the single models
of "unimodal" 8 more each) with a validation split of the training speakers
(15% of their rows), and reports the test accuracy of each (its best epoch by
validation loss, `best.keras`), of the single
models (those `unimodal` trains, read through `evaluate`'s per-modality
breakdown), and the seconds each option takes. The normal variant runs "none"
and "unimodal" only (`--normal-balances` changes that).

Targets: with the default balance, every fusion's mean is at or above the best
single modality's mean on both lopsided variants, and on the normal variant it
beats the best single modality by at least 20 points.

Usage:
    python benchmarks/balance.py --data ../shared/data            # 5 folds x 3 variants, about 80 min on 2 cores
    python benchmarks/balance.py --data ../shared/data --quick    # 1 fold, 4 epochs

Writes benchmarks/results/balance.md (+ .json); the generated files go to
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

import av_digits  # noqa: E402  (the AV-digits files and folds)

VARIANTS = {
    "normal": {"image_energy": 0.25, "snr_db": 0.0},
    "weak audio": {"image_energy": 0.25, "snr_db": -12.0},
    "weak images": {"image_energy": 0.08, "snr_db": 0.0},
}
BALANCES = ("none", "unimodal", "ogm_ge")
FUSIONS = ("concat", "gated")
DEFAULT_BALANCE = "unimodal"  # what train.balance "auto" resolves to for several modalities
SETTINGS = {"full": {"folds": None, "epochs": 8}, "quick": {"folds": ("theo",), "epochs": 4}}
NORMAL_MARGIN = 0.20


def split_validation(train_csv, share=0.15, seed=0):
    """Moves a random `share` of the training manifest's rows into `<name>-val.csv`; returns both paths."""
    import csv

    with open(train_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    rng = np.random.default_rng(seed)
    val = set(rng.choice(len(rows), int(round(share * len(rows))), replace=False).tolist())
    paths = []
    for name, keep in (("fit", lambda i: i not in val), ("val", lambda i: i in val)):
        path = train_csv.replace(".csv", f"-{name}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(r for i, r in enumerate(rows) if keep(i))
        paths.append(path)
    return paths


def config(train_csv, val_csv, out, fusion, balance, epochs):
    return {
        "data": {"train": train_csv, "val": val_csv,
                 "columns": {"image": "image", "audio": "audio", "label": "label"},
                 "preprocessing": {"image_size": [28, 28], "sample_rate": av_digits.SPEC["sample_rate"],
                                   "audio_length": 4000},
                 "batch_size": 32, "cache": "memory", "verify": "header"},
        "model": {"image": "small_cnn", "audio": "logmel_cnn", "audio_kwargs": {"hop_ms": 20.0},
                  "fusion": fusion, "fusion_kwargs": {"units": 64}, "dropout": 0.2},
        "train": {"epochs": epochs, "seed": 0, "balance": balance},
        "output": out,
    }


def run_fold(table, folder, speaker, settings, balances, work):
    """{model: {"accuracy", "seconds"}} for one fold of one variant."""
    from mbm_keras.evaluate import evaluate
    from mbm_keras.training import train

    train_csv, tests = av_digits.fold_manifests(table, folder, speaker)
    fit_csv, val_csv = split_validation(train_csv)
    results = {}
    for fusion in FUSIONS:
        for balance in balances:
            out = os.path.join(work, f"{speaker}-{fusion}-{balance}")
            t = time.perf_counter()
            train(config(fit_csv, val_csv, out, fusion, balance, settings["epochs"]), verbose=0, overwrite=True)
            seconds = time.perf_counter() - t
            # Every option's best epoch by validation loss (best.keras): single epochs swing by several points.
            report = evaluate(os.path.join(out, "best.keras"), tests["both"], out=os.path.join(out, "eval-test.json"))
            results[f"{fusion}, {balance}"] = {"accuracy": report["accuracy"], "seconds": seconds}
            singles = report.get("modalities", {}).get("singles", {})
            for modality, accuracy in singles.items():  # the same single models under both fusions: keep the first
                results.setdefault(f"{modality} only", {"accuracy": accuracy, "seconds": None})
            print(f"  [{speaker}] {fusion}, {balance:<9} {report['accuracy']:.1%}  ({seconds:.0f} s)"
                  + "".join(f"  {m} alone {a:.1%}" for m, a in singles.items()), flush=True)
    return results


def summarize(per_fold):
    names = list(next(iter(per_fold.values())))
    out = {}
    for name in names:
        acc = [per_fold[f][name]["accuracy"] for f in per_fold if name in per_fold[f]]
        sec = [per_fold[f][name]["seconds"] for f in per_fold if per_fold[f].get(name, {}).get("seconds") is not None]
        out[name] = {"mean": float(np.mean(acc)), "std": float(np.std(acc)),
                     "seconds": float(np.mean(sec)) if sec else None}
    return out


def checks_of(variant, summary):
    best_single = max((v["mean"] for k, v in summary.items() if k.endswith(" only")), default=None)
    checks = {"best_single": best_single}
    for fusion in FUSIONS:
        name = f"{fusion}, {DEFAULT_BALANCE}"
        if name in summary and best_single is not None:
            margin = summary[name]["mean"] - best_single
            checks[name] = {"margin": margin, "ok": margin >= (NORMAL_MARGIN if variant == "normal" else 0.0)}
    return checks


def format_tables(results, settings, infos):
    lines = [f"Test accuracy (%) on held-out speakers, mean ± std over {len(settings['folds'])} fold(s) "
             f"({', '.join(settings['folds'])}); chance = 10%. Every model is trained by `train(config)` "
             f"({settings['epochs']} epochs; `unimodal` trains the single models {settings['epochs']} epochs each "
             f"first) with 15% of the training speakers' rows for validation; 'train s' is the mean wall time of "
             f"`train()` per fold on {os.cpu_count()} CPU cores. The single models are those `unimodal` trains.", ""]
    for variant, summary in results.items():
        info = infos[variant]
        lines.append(f"### {variant}: images keep {info['pca_components']} PCA components ({info['pca_energy']:.0%} "
                     f"of the energy), audio at {info['snr_db'][0]:+.0f} dB SNR")
        lines += ["", "| model | test accuracy | train s |", "| --- | ---: | ---: |"]
        for name, v in summary["models"].items():
            sec = "" if v["seconds"] is None else f"{v['seconds']:.0f}"
            lines.append(f"| {name} | {100 * v['mean']:.1f} ± {100 * v['std']:.1f} | {sec} |")
        c = summary["checks"]
        for name, check in c.items():
            if name == "best_single":
                continue
            target = f">= +{100 * NORMAL_MARGIN:.0f}" if variant == "normal" else ">= 0"
            lines.append(f"- {name} - best single model: {100 * check['margin']:+.1f} points "
                         f"({'OK' if check['ok'] else 'MISSED'}: target {target}).")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    av_digits.add_file_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="one fold (theo), 4 epochs")
    parser.add_argument("--folds", nargs="+", help="test speakers, e.g. --folds theo george (default: every speaker)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="variants to run, e.g. --variants 'weak audio'")
    parser.add_argument("--normal-balances", nargs="+", choices=BALANCES, default=["none", DEFAULT_BALANCE],
                        help="balances to train on the normal variant (default: none unimodal)")
    parser.add_argument("--out", help="markdown file (default: benchmarks/results/balance.md, --quick: balance-quick.md)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    if args.folds:
        settings["folds"] = tuple(args.folds)
    args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "balance-quick.md" if args.quick else "balance.md")
    start = time.time()
    results, infos, raw = {}, {}, {}
    for variant in args.variants:
        spec = {**av_digits.SPEC, **VARIANTS[variant]}
        print(f"[{variant}] building the files (cached under {args.work})", flush=True)
        try:
            table, info = av_digits.build_files(args.data, args.work, spec)
        except (FileNotFoundError, ValueError) as e:
            parser.error(f"--data {args.data}: {e}")
        infos[variant] = info
        folds = settings["folds"] or tuple(sorted({r["speaker"] for r in table}))
        settings["folds"] = folds
        balances = args.normal_balances if variant == "normal" else BALANCES
        per_fold = {}
        with tempfile.TemporaryDirectory(prefix="balance-runs-") as work:
            for speaker in folds:
                per_fold[speaker] = run_fold(table, info["folder"], speaker, settings, balances, work)
        summary = summarize(per_fold)
        results[variant] = {"models": summary, "checks": checks_of(variant, summary)}
        raw[variant] = per_fold
    command = "python benchmarks/balance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = format_tables(results, settings, infos)
    text += f"\nProduced by:\n\n```\n{command}\n```\n\nTotal time {(time.time() - start) / 60:.1f} min on {os.cpu_count()} CPU cores.\n"
    print(text, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        f.write("# Balanced fusion benchmark\n\n" + text)
    os.replace(args.out + ".tmp", args.out)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "infos": infos, "results": results, "per_fold": raw}, f, indent=1)
    ok = all(c["ok"] for r in results.values() for k, c in r["checks"].items() if k != "best_single")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
