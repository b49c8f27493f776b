"""`mbm-keras pack`: a manifest and its files packed into TFRecord shards."""

import argparse

from mbm_keras.cli.common import positive_float, positive_int


def add_parser(sub):
    pack = sub.add_parser(
        "pack",
        help="pack a manifest and its files into TFRecord shards (shared storage, TPU pods, many workers)",
        description=(
            "Writes each row's file bytes (as they are, no re-encoding) and cells into TFRecord shards of about "
            "--shard-mb MB, then index.json. Train, evaluate and check-data read the shard folder wherever they "
            "take a manifest (data.train: shards/); multi_worker gives each worker its own shards (--shard-rows makes "
            "them equal, so every row is read: each worker takes the same number of steps). "
            "--out may be a gs:// or other TensorFlow file system path. An interrupted pack publishes nothing."
        ),
        epilog="examples:\n  mbm-keras pack --data data/demo/train.csv --out shards/train\n"
               "  mbm-keras pack --data data/demo/train.csv --out gs://bucket/train --shard-mb 200\n"
               "  mbm-keras pack --data data/demo/train.csv --out shards/train --shard-rows 4096   # for multi_worker\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pack.add_argument("--data", required=True, help="manifest to pack, e.g. --data data/demo/train.csv")
    pack.add_argument("--out", required=True, help="shard folder to write, e.g. --out shards/train")
    pack.add_argument("--shard-mb", type=positive_float, default=200, help="shard size in MB, e.g. --shard-mb 100 (default: %(default)s)")
    pack.add_argument("--shard-rows", type=positive_int, default=None,
                      help="also close a shard at this many rows, e.g. --shard-rows 4096 (equal shards for multi_worker)")
    pack.add_argument("--file-columns", default=None,
                      help="comma-separated columns holding file paths (default: found from the cells), "
                           "e.g. --file-columns image,audio")
    pack.add_argument("--allow-outside-root", action="store_true",
                      help="accept file paths that resolve outside the manifest's folder, e.g. --allow-outside-root")
    pack.add_argument("--quiet", action="store_true", help="no progress bar, e.g. --quiet")
    pack.set_defaults(func=command)


def command(args):
    from mbm_keras.data.shards import pack

    columns = args.file_columns.split(",") if args.file_columns else None
    index = pack(args.data, args.out, shard_mb=args.shard_mb, file_columns=columns, progress=not args.quiet,
                 allow_outside_root=args.allow_outside_root, shard_rows=args.shard_rows)
    print(f"Packed {index['rows']:,} rows into {len(index['shards'])} shard(s) in {args.out} "
          f"(file columns: {', '.join(index['file_columns']) or 'none'})")
    return 0
