"""`mbm-keras explain`: why a run answers as it does, row by row: HTML reports with pictures."""

import argparse

from mbm_keras.cli.common import positive_int


def add_parser(sub):
    explain = sub.add_parser(
        "explain",
        help="explain a run's answers: each modality's share and the pixels, words, sounds and cells that mattered",
        description="For each row: the modality Shapley values (each modality left out as the model learned to "
                    "go without it, when it was trained with missing_modalities) and the integrated gradients "
                    "of every input (pixels, words, log-mel frames over time, cells), drawn as pictures in one "
                    "self-contained HTML page per row (OUT/row-N.html, panels as PNGs in OUT/row-N/), a summary "
                    "page (OUT/index.html) and the numbers (OUT/explanation.json). A classification run explains "
                    "its predicted class; a retrieval run, the match score of each row's query with the row's own "
                    "candidate (query words, candidate regions); a transcription run, each character of the greedy "
                    "transcript (the audio frames and context tokens that drove it).",
        epilog="examples (runs/first: mbm-keras train --config configs/classification.yaml):\n"
               "  mbm-keras explain --model runs/first --data data/demo/test.csv --rows 0,5,9 --out report\n"
               "  mbm-keras explain --model runs/first --data data/demo/test.csv --smoothgrad 8 --image-baseline blur\n"
               "  mbm-keras explain --model runs/search --data data/demo/test.csv --rows 0,1\n"
               "  mbm-keras explain --model runs/transcription --data data/demo/speech_test.csv --rows 0\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument("--model", required=True, help="classification, retrieval or transcription run folder, e.g. --model runs/first")
    explain.add_argument("--data", required=True, help="manifest of the rows, e.g. --data data/demo/test.csv")
    explain.add_argument("--rows", type=_rows, default=None,
                         help="rows to explain, 0-based positions in the manifest, e.g. --rows 0,5,9 (default: the first 8)")
    explain.add_argument("--out", default=None, help="report folder, e.g. --out report (default: RUN/explain-<data name>)")
    explain.add_argument("--steps", type=positive_int, default=32,
                         help="integrated gradients' first step count, doubled until the attributions add up within "
                              "1%%, e.g. --steps 64 (default: %(default)s)")
    explain.add_argument("--smoothgrad", type=int, default=0,
                         help="average over N noisy copies of each row (SmoothGrad), e.g. --smoothgrad 8 (default: off)")
    explain.add_argument("--image-baseline", choices=("black", "blur"), default="black",
                         help="what an image is compared with, e.g. --image-baseline blur (default: %(default)s)")
    explain.set_defaults(func=command)


def _rows(text):
    try:
        rows = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        rows = None
    if not rows or any(r < 0 for r in rows):
        raise argparse.ArgumentTypeError(f"must be row positions from 0, comma-separated, e.g. 0,5,9. Received: {text}")
    return rows


def command(args):
    from mbm_keras.explain.explaining import explain

    if args.smoothgrad < 0:
        raise ValueError(f"--smoothgrad must be 0 or more. Received: {args.smoothgrad}")
    result = explain(args.model, args.data, rows=args.rows, out=args.out, steps=args.steps,
                     smoothgrad=args.smoothgrad, image_baseline=args.image_baseline)
    if "mean_shapley" in result:
        mean = ", ".join(f"{f} {v:+.3f}" for f, v in result["mean_shapley"].items())
        said = f"mean Shapley values: {mean}"
    else:
        said = f"{sum(len(r['characters']) for r in result['rows'])} characters"
    print(f"Explained {len(result['rows'])} rows: {result['out']}/index.html ({said})")
    return 0
