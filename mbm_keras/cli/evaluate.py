"""`mbm-keras evaluate`: a run scored on a manifest."""

import argparse

from mbm_keras.cli.common import positive_int
from mbm_keras.io import printable


def add_parser(sub):
    evaluate = sub.add_parser(
        "evaluate",
        help="loss, metrics, per-class precision/recall and confusion matrix of a run on a manifest",
        description="Evaluates a run folder (from mbm-keras train) on a manifest and writes the results as JSON.",
        epilog="examples:\n  mbm-keras evaluate --model runs/first --data data/demo/test.csv\n"
               "  mbm-keras evaluate --model runs/first --data data/demo/test.csv --robustness\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--model", required=True, help="run folder (model.keras + preprocessor.json), e.g. --model runs/first")
    evaluate.add_argument("--data", required=True, help="manifest to evaluate on, e.g. --data data/demo/test.csv")
    evaluate.add_argument("--batch-size", type=positive_int, default=32, help="batch size, e.g. --batch-size 64 (default: %(default)s)")
    evaluate.add_argument("--out", default=None, help="JSON output, e.g. --out eval.json (default: <model>/eval-<data name>.json)")
    evaluate.add_argument("--robustness", action="store_true",
                          help="also: accuracy with each modality removed, under increasing noise per modality, and each "
                               "modality's reliance share, as <out>-robustness.json and a PNG plot, e.g. --robustness")
    evaluate.add_argument("--beam", type=positive_int, default=None,
                          help="transcription runs: beam-search width (default: greedy), e.g. --beam 8")
    evaluate.add_argument("--allow-outside-root", action="store_true",
                          help="accept file paths that resolve outside the manifest's folder, e.g. --allow-outside-root")
    evaluate.set_defaults(func=command)


def command(args):
    from mbm_keras.evaluate import evaluate, format_report

    print(printable(format_report(evaluate(args.model, args.data, batch_size=args.batch_size, out=args.out,
                                 robustness=args.robustness, allow_outside_root=args.allow_outside_root,
                                 beam=args.beam)), newlines=True))
    return 0
