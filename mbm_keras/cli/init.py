"""`mbm-keras init`: a first run config guessed from a manifest."""

import argparse

from mbm_keras.cli.common import positive_int
from mbm_keras.io import printable


def add_parser(sub):
    init = sub.add_parser(
        "init",
        help="write a commented run.yaml for your own manifest, guessing each column's modality",
        description=(
            "Reads the manifest's header and a sample of its rows, guesses each column's modality (image, audio "
            "and sensor files by their extension, numbers, categories, free text, the label by its name), prints "
            "the guesses and writes a commented run config that mbm-keras train takes as it is. Columns that fit "
            "no rule, or several, are listed and left out of the config for you to decide."
        ),
        epilog="examples:\n  mbm-keras init --data data/demo/train.csv --out run.yaml\n"
               "  mbm-keras init --data data/demo/manifest.csv --label keyword --out keyword.yaml   # predict the animal word\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--data", required=True, help="the training manifest (.csv, .jsonl, .parquet), "
                                                    "e.g. --data data/demo/train.csv")
    init.add_argument("--out", default="run.yaml", help="the config to write, e.g. --out my_run.yaml "
                                                       "(default: %(default)s; refused if it exists)")
    init.add_argument("--label", default=None, help="the column to predict, when none is named label, target, "
                                                    "class, category or y, e.g. --label keyword")
    init.add_argument("--sample", type=positive_int, default=1000, help="rows read for the guesses, e.g. --sample 5000 "
                                                               "(default: %(default)s)")
    init.add_argument("--overwrite", action="store_true", help="replace an existing --out file, e.g. --overwrite")
    init.set_defaults(func=command)


def command(args):
    from mbm_keras.training.init_config import init_config

    report = init_config(args.data, args.out, label=args.label, sample=args.sample, overwrite=args.overwrite)
    width = max(len(c["column"]) for c in report["columns"]) + 2
    for c in report["columns"]:
        kind = f"{c['kind']} ({c['tabular']})" if c["tabular"] else c["kind"]
        flag = "  <- ambiguous, left out" if c["ambiguous"] and c["kind"] == "left out" else (
            "  <- ambiguous" if c["ambiguous"] else "")
        print(printable(f"{c['column']:<{width}}{kind:<24}{c['why']}{flag}"))
    print(f"\nWrote {report['config']}. Check it, then: mbm-keras train --config {report['config']}")
    if report["ambiguous"]:
        print(printable(f"Decide about: {', '.join(report['ambiguous'])} (see the comments in {report['config']})"))
    return 0
