"""Does `mbm-keras tune` find a config at least as good as the default one? AV-digits (a spoken digit and a
handwritten one, both made hard: benchmarks/av_digits.py), speaker-held-out folds, a fixed budget.

Per fold (the test speaker held out of everything):
- default: the config a user writes from `mbm-keras init`'s guesses (small_cnn + logmel_cnn, the default fusion,
  learning rate and dropout, the CLI's defaults for balance and validation: no data.val, so a hold-out of the
  training speakers' rows grouped by speaker): the search's baseline (`trials/baseline`, the config as written);
- tuned: the config `tune()` keeps after --trials trials of a search: section (fusion, dropout, learning rate),
  each scored on that same validation hold-out: the best trial when it beats the default beyond the validation
  noise and again on --confirm fresh splits (other seeds, so other held-out speakers), else the default itself.
Both are tested on the held-out speaker's rows; the table gives each fold, the mean and spread, and the time each
took (the tuned time is the whole search, the default's training included), and the best trial's test score
whether kept or not.

    python benchmarks/tune.py --data ../shared/data                        # 3 folds, 4 trials: about 45 minutes
    python benchmarks/tune.py --data ../shared/data --folds theo --trials 6
    python benchmarks/tune.py --data ../shared/data --folds theo --default train.learning_rate=3e-5  # a poor default
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import av_digits  # noqa: E402

SEARCH = {"model.fusion": ["concat", "gated", "attention"],
          "model.dropout": {"min": 0.0, "max": 0.5},
          "train.learning_rate": {"min": 3.0e-4, "max": 1.0e-2, "log": True}}


def base_config(train_csv, output, epochs):
    return {
        "data": {"train": train_csv, "group": "speaker",
                 "columns": {"image": "image", "audio": "audio", "label": "label"},
                 "preprocessing": {"image_size": [28, 28], "sample_rate": av_digits.SPEC["sample_rate"],
                                   "audio_length": 4000}},
        "model": {"image": "small_cnn", "audio": "logmel_cnn"},
        "train": {"epochs": epochs, "seed": 0},
        "output": output,
    }


def test_accuracy(run, manifest):
    from mbm_keras.evaluate import evaluate

    return float(evaluate(run, manifest, out=os.path.join(run, "eval-test.json"))["accuracy"])


def run_fold(table, folder, speaker, work, trials, algorithm, epochs, confirm, overrides=()):
    from mbm_keras.tuning import tune

    train_csv, tests = av_digits.fold_manifests(table, folder, speaker)
    path = os.path.join(work, speaker, "tune.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        config = base_config(train_csv, os.path.join(work, speaker, "tune"), epochs)
        for item in overrides:  # --default section.key=value: a worse (or other) config as written
            key, value = item.split("=", 1)
            section, name = key.split(".", 1)
            value = yaml.safe_load(value)
            try:  # YAML reads 3e-5 (no dot) as text
                value = float(value) if isinstance(value, str) else value
            except ValueError:
                pass
            config[section][name] = value
        yaml.safe_dump({**config, "search": SEARCH}, f, sort_keys=False)
    start = time.time()
    result = tune(path, trials=trials, algorithm=algorithm, progress=True, confirm=confirm)
    seconds = time.time() - start
    base, kept = result["baseline"], result["best"]
    best = max(result["trials"], key=lambda r: r["score"])
    return {"speaker": speaker, "default": test_accuracy(base["output"], tests["both"]),
            "tuned": test_accuracy(kept["output"], tests["both"]), "best_trial": test_accuracy(best["output"], tests["both"]),
            "default_s": base["seconds"], "tuned_s": seconds, "kept": kept["trial"], "why": result["why"],
            "default_val": base["score"], "best_val": best["score"], "trials": len(result["trials"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    parser.add_argument("--work", default=os.path.join(os.path.expanduser("~"), ".cache", "mbm_keras"))
    parser.add_argument("--folds", default="theo,jackson,nicolas", help="test speakers, comma-separated")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--algorithm", default="random", choices=("random", "bayesian", "hyperband"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--confirm", type=int, default=2, help="tune's confirm: fresh splits for a winning trial")
    parser.add_argument("--default", action="append", default=[], metavar="KEY=VALUE",
                        help="change the config as written, e.g. --default train.learning_rate=3e-5 (a poor default: "
                             "does the search find better?)")
    args = parser.parse_args(argv)
    table, info = av_digits.build_files(args.data, args.work)
    work = tempfile.mkdtemp(prefix="tune-bench-")
    rows = []
    for speaker in args.folds.split(","):
        print(f"fold {speaker}: training the default config, then {args.trials} trials ...", flush=True)
        rows.append(run_fold(table, info["folder"], speaker, work, args.trials, args.algorithm, args.epochs,
                             args.confirm, args.default))
        r = rows[-1]
        print(f"  default {r['default']:.3f} ({r['default_s']:.0f} s), tuned {r['tuned']:.3f} ({r['tuned_s']:.0f} s, "
              f"{r['trials']} trials; kept: {r['why']}; the best trial on test: {r['best_trial']:.3f})", flush=True)
    print(f"\nAV-digits, {len(rows)} speaker-held-out folds, {args.trials} {args.algorithm} trials of {args.epochs} "
          f"epochs each, test accuracy on the held-out speaker:")
    print(f"{'fold':<10}{'default':>9}{'tuned':>9}{'kept':>10}{'best trial':>12}{'default s':>11}{'tuned s':>9}")
    for r in rows:
        print(f"{r['speaker']:<10}{r['default']:>9.3f}{r['tuned']:>9.3f}{r['kept']:>10}{r['best_trial']:>12.3f}"
              f"{r['default_s']:>11.0f}{r['tuned_s']:>9.0f}")
    for name in ("default", "tuned"):
        values = np.array([r[name] for r in rows])
        print(f"{name}: mean {values.mean():.3f}, spread (std over folds) {values.std():.3f}")
    gains = np.array([r["tuned"] - r["default"] for r in rows])
    print(f"tuned - default: mean {gains.mean():+.3f}, per fold {', '.join(f'{g:+.3f}' for g in gains)}")


if __name__ == "__main__":
    main()
