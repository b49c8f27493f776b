"""`mbm-keras embed`: a catalogue's rows embedded by a retrieval run."""

import argparse
import os


def add_parser(sub):
    embed = sub.add_parser(
        "embed",
        help="embed a manifest's rows with a retrieval run's candidate (or query) tower",
        description="Writes one vector per row (a .npy file) and the rows' cells (.rows.json). Rows whose files "
                    "are missing or do not decode are named (--on-error raise, the default) or left out (skip).",
        epilog="examples (runs/search: mbm-keras train --config configs/retrieval.yaml):\n"
               "  mbm-keras embed --model runs/search --data data/demo/test.csv --out vectors.npy\n"
               "  mbm-keras embed --model runs/search --data data/demo/val.csv --tower query --out queries.npy\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("--model", required=True, help="retrieval run folder, e.g. --model runs/search")
    embed.add_argument("--data", required=True, help="manifest to embed, e.g. --data data/demo/test.csv")
    embed.add_argument("--out", required=True, help="vectors file, e.g. --out vectors.npy")
    embed.add_argument("--tower", choices=("candidate", "query"), default="candidate",
                       help="which tower embeds the rows, e.g. --tower query (default: %(default)s)")
    embed.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                       help="a row that cannot be read: raise (default) or skip, e.g. --on-error skip")
    embed.add_argument("--quiet", action="store_true", help="no progress bars, e.g. --quiet")
    embed.set_defaults(func=command)


def command(args):
    import numpy as np

    from mbm_keras.io import write_json
    from mbm_keras.retrieval.search import embed

    vectors, rows = embed(args.model, args.data, args.tower, on_error=args.on_error, progress=not args.quiet)
    out = args.out if args.out.endswith(".npy") else args.out + ".npy"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.save(out, vectors)
    write_json(out[:-4] + ".rows.json", rows)
    print(f"Embedded {len(rows):,} rows ({vectors.shape[1]} dimensions) to {out} and {out[:-4]}.rows.json")
    return 0
