"""`mbm-keras search`: the best rows of an index for one query."""

import argparse

from mbm_keras.cli.common import feature_values, positive_int
from mbm_keras.io import printable


def add_parser(sub):
    search = sub.add_parser(
        "search",
        help="search an index with one query (text, image, audio or named features)",
        description="Embeds the query with the query tower of the run that built the index (or --model) and "
                    "prints the best rows: rank, cosine score, row number and cells (file paths).",
        epilog="examples (catalogue.index: see mbm-keras index --help):\n"
               "  mbm-keras search --index catalogue.index --feature tabular=45,1400,kitty --k 5\n"
               "  mbm-keras search --index other.index --text \"a red bird\" --image data/demo/images/0001.png\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("--index", required=True, help="index file, e.g. --index catalogue.index")
    search.add_argument("--model", default=None,
                        help="retrieval run, e.g. --model runs/search (default: the one that built the index)")
    search.add_argument("--text", default=None, help="query text, e.g. --text \"a red bird\"")
    search.add_argument("--image", default=None, help="query image file, e.g. --image data/demo/images/0001.png")
    search.add_argument("--audio", default=None, help="query WAV file, e.g. --audio data/demo/audio/0001.wav")
    search.add_argument("--feature", action="append", help="a named query feature, e.g. --feature caption=\"red\"")
    search.add_argument("--k", type=positive_int, default=10, help="results to print, e.g. --k 5 (default: %(default)s)")
    search.set_defaults(func=command)


def command(args):
    from mbm_keras.retrieval.search import search

    values = {k: v for k, v in (("image", args.image), ("text", args.text), ("audio", args.audio)) if v is not None}
    for name, value in feature_values(args.feature).items():
        if name in values:
            raise ValueError(f"{name!r} is given twice: as --{name} and as --feature")
        values[name] = value
    for rank, score, row in search(args.index, values, run=args.model, k=args.k):
        folder = row.get("_folder")
        cells = "  ".join(f"{c}={v}" for c, v in row.items() if c not in ("row", "_folder") and v is not None)
        print(printable(f"{rank:>3}  {score:.4f}  row {row['row']}  {cells}" + (f"  (in {folder})" if folder else "")))
    return 0
