"""`mbm-keras index`: a searchable index of a catalogue (written, or extended with --add)."""

import argparse


def add_parser(sub):
    index = sub.add_parser(
        "index",
        help="build (or extend) a search index of a catalogue with a retrieval run",
        description="Embeds every catalogue row with the run's candidate tower and writes one index file "
                    "(atomically: a failure leaves the previous index as it was). Exact search under 50,000 rows, "
                    "a product-quantized scan re-scored exactly from there (--kind pq); --kind hnsw: faiss' "
                    "HNSW graph. --add appends rows to an existing index of the "
                    "same model without rebuilding it.",
        epilog="examples (runs/search: mbm-keras train --config configs/retrieval.yaml):\n"
               "  mbm-keras index --model runs/search --data data/demo/test.csv --out catalogue.index\n"
               "  mbm-keras index --model runs/search --data data/demo/val.csv --out catalogue.index --add\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    index.add_argument("--model", required=True, help="retrieval run folder, e.g. --model runs/search")
    index.add_argument("--data", required=True, help="catalogue manifest, e.g. --data data/demo/test.csv")
    index.add_argument("--out", required=True, help="index file, e.g. --out catalogue.index")
    index.add_argument("--kind", choices=("auto", "exact", "pq", "hnsw"), default="auto",
                       help="search kind, e.g. --kind hnsw (default: %(default)s)")
    index.add_argument("--add", action="store_true", help="add the rows to the existing index --out, e.g. --add")
    index.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                       help="a row that cannot be read: raise (default) or skip, e.g. --on-error skip")
    index.add_argument("--quiet", action="store_true", help="no progress bars, e.g. --quiet")
    index.set_defaults(func=command)


def command(args):
    from mbm_keras.retrieval.search import build_index

    index = build_index(args.model, args.data, args.out, kind=args.kind, add=args.add, on_error=args.on_error,
                        progress=not args.quiet)
    how = {"exact": "exact", "pq": "approximate (faiss product-quantized scan, re-scored exactly)",
           "hnsw": "approximate (faiss HNSW graph)"}[index.method]
    print(f"Index {args.out}: {len(index):,} rows, {index.dim} dimensions, {how} search")
    return 0
