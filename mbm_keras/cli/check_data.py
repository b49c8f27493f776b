"""`mbm-keras check-data`: every row and file of a manifest or shard folder checked up front."""

import argparse


def add_parser(sub):
    check = sub.add_parser(
        "check-data",
        help="check every row and file of a manifest up front (training checks files as it reads them)",
        description=(
            "Reads a manifest as training would and decodes every file with the pipeline's own decoders, in "
            "parallel, with a progress bar; prints each unusable row with its column, file and reason. Exit "
            "status 1 when any row is unusable. The preprocessing comes from a run folder (--model) or is "
            "fitted on data.train of a run config (--config)."
        ),
        epilog="examples:\n  mbm-keras check-data --data data/demo/train.csv --config configs/classification.yaml\n"
               "  mbm-keras check-data --data data/demo/test.csv --model runs/first --out problems.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--data", required=True, help="manifest to check, e.g. --data data/demo/train.csv")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="run folder whose preprocessing to use, e.g. --model runs/first")
    source.add_argument("--config", help="run config whose data section to use, e.g. --config configs/classification.yaml")
    check.add_argument("--missing-modalities", action="store_true",
                       help="empty cells are absent modalities, not problems, e.g. --missing-modalities")
    check.add_argument("--allow-outside-root", action="store_true",
                       help="accept file paths that resolve outside the manifest's folder, e.g. --allow-outside-root")
    check.add_argument("--out", default=None, help="write the report as JSON, e.g. --out problems.json")
    check.add_argument("--quiet", action="store_true", help="no progress bar, e.g. --quiet")
    check.set_defaults(func=command)


def command(args):
    from mbm_keras.data import Preprocessor, check_data, fit_preprocessor

    if args.model:
        pre = Preprocessor.load(args.model)
        missing, outside = args.missing_modalities, args.allow_outside_root
    else:
        from mbm_keras.fusion_model import normalize_features
        from mbm_keras.training.config import load_config

        config = load_config(args.config)
        data, model = config["data"], config["model"]
        features = normalize_features(model["features"]) if model["features"] else {}
        print(f"Fitting the preprocessing on data.train ({data['train']}), as mbm-keras train does", flush=True)
        pre = fit_preprocessor(data["train"], data["columns"], {k: f["modality"] for k, f in features.items()},
                               share=model["share_encoders"], **data["preprocessing"])
        missing = args.missing_modalities or data["missing_modalities"]
        outside = args.allow_outside_root or data["allow_outside_root"]
    report = check_data(args.data, pre, missing_modalities=missing, allow_outside_root=outside,
                        progress=not args.quiet)
    if args.out:
        from mbm_keras.io import write_json

        write_json(args.out, report)
        print(f"Report written to {args.out}")
    return 1 if report["problems"] else 0
