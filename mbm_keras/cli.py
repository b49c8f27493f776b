"""The `mbm-keras` command line."""

import argparse
import os
import sys

EPILOG_MAIN = """examples:
  mbm-keras demo                                            # train and export on built-in data
  mbm-keras zoo                                             # encoders and fusions
  mbm-keras init --data data/demo/train.csv --out my_run.yaml   # a first config for a manifest
  mbm-keras train --config configs/classification.yaml    # a run folder: model, history, logs
  mbm-keras evaluate --model runs/first --data data/demo/test.csv --robustness
  mbm-keras export --model runs/first --format tflite --quantize int8
  mbm-keras predict --model saved_models/first-tflite-int8 --image data/demo/images/0001.png \
      --audio data/demo/audio/0001.wav --text "a brown terrier slept in the house"

The files named here exist after: mbm-keras demo --data-only --data-dir data/demo (from the repository root).
Each command's --help describes its options, with examples.
"""

EPILOG_DEMO = """example:
  mbm-keras demo                          # writes saved_models/demo/
  mbm-keras demo --epochs 20 --out /tmp/demo --seed 1
  mbm-keras demo --data-only --data-dir data/demo   # only the data, where the configs in configs/ look for it
"""

EPILOG_TRAIN = """example run.yaml:
  data:
    train: data/demo/train.csv     # paths relative to this file (here: a run.yaml in the repository root;
    val: data/demo/val.csv         # configs/ holds commented examples that run as they are;
                                   # without val, val_split: 0.2 of train is held out, grouped by group: COLUMN)
    columns: {image: image, text: text, label: label}
    preprocessing: {image_size: [224, 224], text_length: 64}
  model: {image: resnet50, text: bilstm, fusion: concat, weights: imagenet, freeze_backbone: true}
  train:
    epochs: 10
    learning_rate: 0.001
    early_stopping_patience: 3
    balance: auto                  # auto (probe for several modalities), none, unimodal, probe, ogm_ge
    keep_best_of: auto             # auto (all when there is validation data): keep a single-modality model
                                   # when it beats the fusion on validation; fusion: always the fusion
  output: runs/first

  mbm-keras train --config configs/classification.yaml --epochs 3
  mbm-keras train --config configs/classification.yaml --strategy mirrored      # all local GPUs
  TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0}}' \
    mbm-keras train --config configs/classification.yaml --strategy multi_worker  # same on each machine, its own index
"""

EPILOG_EXPORT = """examples:
  mbm-keras export --model runs/first --format saved_model --out saved_models/first
  mbm-keras export --model runs/first --format tflite --quantize int8 --out saved_models/first-int8
  mbm-keras export --model runs/first --format onnx --out saved_models/first-onnx
"""

EPILOG_PREDICT = """examples:
  mbm-keras predict --model saved_models/demo --image data/demo/images/0001.png --text "a brown terrier" \
      --audio data/demo/audio/0001.wav
  mbm-keras predict --model saved_models/first-tflite-int8/model.tflite --image data/demo/images/0001.png --text "a dog"
  mbm-keras predict --model runs/first --feature image=data/demo/images/0001.png --feature text="a dog"
  mbm-keras predict --model runs/tabular --tabular 30.5,1400,kitty     # configs/tabular.yaml's run
"""

EPILOG_ZOO = """example:
  mbm-keras zoo
  mbm-keras zoo --modality text
"""


def _at_least(convert, low, strict=False):
    """An argparse type: a finite number >= `low` (> `low` when `strict`); `--k -3` would otherwise slice off
    the last 3 results, `--beam 0` silently decode greedily."""
    what = f"{'a whole number' if convert is int else 'a number'} {'>' if strict else '>='} {low}"

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}. Received: {text!r}") from None
        if not (value > low if strict else value >= low) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {what}. Received: {text}")
        return value

    return parse


positive_int, non_negative_int, positive_float = _at_least(int, 1), _at_least(int, 0), _at_least(float, 0, True)


def printable(text, newlines=False):
    """Cells and names from the user's files, safe for the terminal (`mbm_keras.io.printable`)."""
    from mbm_keras.io import printable as escape

    return escape(text, newlines)


def _quiet_tensorflow():
    # TensorFlow's C++ start-up lines (CUDA probing on CPU machines) are noise here.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_demo(args):
    from mbm_keras.demo import default_data_dir, run_demo, write_demo_dataset

    if args.data_only:
        folder = args.data_dir or default_data_dir(args.seed)
        manifest = write_demo_dataset(folder, seed=args.seed)
        print(f"Demo data in {os.path.dirname(os.path.abspath(manifest))}: manifest.csv (all 800 rows) and "
              f"train.csv / val.csv / test.csv; columns image, text, audio, redness, keyword, pitch_hz, label, split")
        return 0

    results = run_demo(
        out=args.out,
        data_dir=args.data_dir,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0 if args.quiet else (1 if sys.stdout.isatty() else 2),
    )
    if not results["passed"]:
        print(
            f"mbm-keras demo: the fusion model beat the best single modality by only "
            f"{results['margin'] * 100:.1f} points (expected >= 5).",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_train(args):
    from mbm_keras.training import train

    result = train(args.config, epochs=args.epochs, output=args.out, strategy=args.strategy, restart=args.restart,
                   overwrite=args.overwrite)
    print(f"Run written to {result['output']}")
    return 0


def cmd_pretrain(args):
    from mbm_keras.training import pretrain

    result = pretrain(args.config, epochs=args.epochs, output=args.out, strategy=args.strategy, restart=args.restart,
                      overwrite=args.overwrite)
    picture = result["summary"].get("picture")  # only the chief writes it under multi_worker
    print(f"Run written to {result['output']}" + (f"; reconstructions: {picture}" if picture else ""))
    return 0


def cmd_init(args):
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


def cmd_check_data(args):
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


def cmd_pack(args):
    from mbm_keras.data.shards import pack

    columns = args.file_columns.split(",") if args.file_columns else None
    index = pack(args.data, args.out, shard_mb=args.shard_mb, file_columns=columns, progress=not args.quiet,
                 allow_outside_root=args.allow_outside_root, shard_rows=args.shard_rows)
    print(f"Packed {index['rows']:,} rows into {len(index['shards'])} shard(s) in {args.out} "
          f"(file columns: {', '.join(index['file_columns']) or 'none'})")
    return 0


def _feature_values(items):
    """`--feature name=value` items as a dict."""
    values = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--feature takes name=value (a file path, or the text). Received: --feature {item!r}")
        if name in values:
            raise ValueError(f"--feature {name}=... is given twice")
        values[name] = value
    return values


def cmd_embed(args):
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


def cmd_index(args):
    from mbm_keras.retrieval.search import build_index

    index = build_index(args.model, args.data, args.out, kind=args.kind, add=args.add, on_error=args.on_error,
                        progress=not args.quiet)
    how = {"exact": "exact", "pq": "approximate (faiss product-quantized scan, re-scored exactly)",
           "hnsw": "approximate (faiss HNSW graph)"}[index.method]
    print(f"Index {args.out}: {len(index):,} rows, {index.dim} dimensions, {how} search")
    return 0


def cmd_search(args):
    from mbm_keras.retrieval.search import search

    values = {k: v for k, v in (("image", args.image), ("text", args.text), ("audio", args.audio)) if v is not None}
    for name, value in _feature_values(args.feature).items():
        if name in values:
            raise ValueError(f"{name!r} is given twice: as --{name} and as --feature")
        values[name] = value
    for rank, score, row in search(args.index, values, run=args.model, k=args.k):
        folder = row.get("_folder")
        cells = "  ".join(f"{c}={v}" for c, v in row.items() if c not in ("row", "_folder") and v is not None)
        print(printable(f"{rank:>3}  {score:.4f}  row {row['row']}  {cells}" + (f"  (in {folder})" if folder else "")))
    return 0


def cmd_evaluate(args):
    from mbm_keras.evaluate import evaluate, format_report

    print(printable(format_report(evaluate(args.model, args.data, batch_size=args.batch_size, out=args.out,
                                 robustness=args.robustness, allow_outside_root=args.allow_outside_root,
                                 beam=args.beam)), newlines=True))
    return 0


def cmd_transcribe(args):
    from mbm_keras.deploy.transcription_export import transcribe

    print(printable(transcribe(args.model, args.audio, context=args.context, beam=args.beam, candidates=args.candidates)))
    return 0


def cmd_export(args):
    from mbm_keras.deploy import export_model

    export_model(args.model, args.format, args.out, quantize=args.quantize, data=args.data,
                 num_examples=args.examples, allow_outside_root=args.allow_outside_root)
    return 0


def cmd_predict(args):
    from mbm_keras.deploy import predict

    tabular = args.tabular.split(",") if args.tabular is not None else None
    features = _feature_values(args.feature)
    results = predict(args.model, image=args.image, text=args.text, audio=args.audio, tabular=tabular, top=args.top,
                      features=features)
    for name, value in results:
        print(printable(f"{name:<30}{value:.4f}" if isinstance(value, float) else f"{name:<30}{value}"))
    return 0


def zoo_rows(modality=None):
    """One dict per registered modality, encoder and fusion, for `mbm-keras zoo`."""
    from mbm_keras import create_encoder, encoder_info, list_encoders, list_fusions
    from mbm_keras.fusion_model import input_specs
    from mbm_keras.fusions import FUSIONS
    from mbm_keras.modalities import get_modality, list_modalities

    order = list_modalities()
    rows = []
    for m in order if modality is None else [modality]:
        cls = get_modality(m)
        rows.append({"kind": "modality", "name": m, "encoders": list_encoders(m), "options": list(cls.OPTIONS),
                     "description": cls.description})
    names = sorted(list_encoders(modality), key=lambda n: (order.index(encoder_info(n)["modality"]), n))
    for name in names:
        info = encoder_info(name)
        shape, _, kwargs = input_specs({"x": info["modality"]}, get_modality(info["modality"]).ZOO)["x"]
        if info.get("preset"):  # its size is the preset's: nothing to build without one
            rows.append({"kind": "encoder", "name": name, "modality": info["modality"], "input": "x".join(map(str, shape)),
                         "params": "preset", "output": "preset", "pretrained": "KerasHub",
                         "tflite": "f32 f16 dyn int8†", "description": info["description"]})
            continue
        encoder = create_encoder(name, info["modality"], shape, offered=kwargs)
        rows.append(
            {
                "kind": "encoder",
                "name": name,
                "modality": info["modality"],
                "input": "x".join(map(str, shape)),
                "params": encoder.count_params(),
                "output": encoder.output.shape[-1],
                "pretrained": "imagenet" if info["pretrained_file"] else "-",
                "tflite": _tflite_support(encoder),
                "description": info["description"],
            }
        )
    if modality is None:
        for name in list_fusions():
            rows.append({"kind": "fusion", "name": name, "description": FUSIONS.meta(name)["description"]})
    return rows


def _count(params):
    return f"{params:,}" if isinstance(params, int) else params


def _tflite_support(encoder):
    """What `mbm-keras export --format tflite` offers for an encoder. Every
    encoder converts to builtin ops at every quantization (tests/test_deploy.py);
    "*": int8 unrolls its recurrent layers over their time steps (the layers
    `deploy.tflite.RECURRENT` names, the ones the export unrolls)."""
    from mbm_keras.deploy.tflite import RECURRENT

    layers = encoder._flatten_layers(include_self=False, recursive=True)
    return "f32 f16 dyn int8" + ("*" if any(type(layer).__name__ in RECURRENT for layer in layers) else "")


def cmd_zoo(args):
    from mbm_keras.modalities import get_modality, list_modalities

    rows = zoo_rows(args.modality)
    encoders = [r for r in rows if r["kind"] == "encoder"]
    print(
        f"{'encoder':<20}{'modality':<11}{'input':>12}{'params':>13}{'features':>9}  "
        f"{'pretrained':<11}{'tflite':<18}description"
    )
    for r in encoders:
        print(
            f"{r['name']:<20}{r['modality']:<11}{r['input']:>12}{_count(r['params']):>13}{r['output']:>9}  "
            f"{r['pretrained']:<11}{r['tflite']:<18}{r['description']}"
        )
    modalities = [r for r in rows if r["kind"] == "modality"]
    width = max(len(", ".join(r["encoders"])) for r in modalities) + 2
    print(f"\n{'modality':<12}{'encoders':<{width}}description")
    for r in modalities:
        print(f"{r['name']:<12}{', '.join(r['encoders']):<{width}}{r['description']}")
    fusions = [r for r in rows if r["kind"] == "fusion"]
    if fusions:
        print(f"\n{'fusion':<20}description")
        for r in fusions:
            print(f"{r['name']:<20}{r['description']}")
    sizes = "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in get_modality(m).ZOO.items())
                      for m in list_modalities())
    print(f"\nParameters at the default sizes ({sizes}).\n"
          "tflite: builtin-op TFLite exports (mbm-keras export --format tflite --quantize none|float16|dynamic|int8); "
          "* int8 unrolls the recurrent layers over their time steps. "
          "† KerasHub encoders: size set by the preset; the TFLite sidecar tokenizes WordPiece presets (BERT-class).")
    return 0


def make_parser():
    parser = argparse.ArgumentParser(
        prog="mbm-keras",
        description="Multimodal fusion models in Keras 3: build, train, export.",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train a small image+text+audio fusion model on built-in data and export it",
        description=(
            "Writes a small built-in dataset (PNG images, WAV clips, CSV with texts), trains an "
            "image+text+audio fusion model and one model per modality, prints their test "
            "accuracy, exports the fusion model (model.keras + SavedModel) and checks the "
            "reloaded files predict the same. No network needed; about 2 minutes on 2 CPU cores."
        ),
        epilog=EPILOG_DEMO,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="saved_models/demo", help="export folder, e.g. --out /tmp/demo (default: %(default)s)")
    demo.add_argument(
        "--data-dir",
        default=None,
        help="where to write the dataset, e.g. --data-dir /tmp/demo-data "
             "(default: ~/.cache/mbm_keras/demo-v2-seed<seed>, or $MBM_KERAS_CACHE)",
    )
    demo.add_argument("--data-only", action="store_true",
                      help="write the dataset and stop (no training), e.g. --data-only --data-dir data/demo "
                           "(the folder the example configs in configs/ read)")
    demo.add_argument("--seed", type=non_negative_int, default=0, help="dataset and training seed, e.g. --seed 1 (default: %(default)s)")
    demo.add_argument("--epochs", type=positive_int, default=12, help="epochs per model, e.g. --epochs 20 (default: %(default)s)")
    demo.add_argument("--batch-size", type=positive_int, default=32, help="batch size, e.g. --batch-size 64 (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="print nothing but errors, e.g. --quiet in scripts and cron jobs")
    demo.set_defaults(func=cmd_demo)

    from mbm_keras.training.strategy import STRATEGIES

    train = sub.add_parser(
        "train",
        help="train the model a YAML/JSON config describes",
        description=(
            "Fits the preprocessing on data.train, builds the model of the model section, trains it "
            "and writes model.keras, best.keras, config.json, preprocessor.json, labels.json, "
            "history.csv and TensorBoard logs to the output folder. Started again after a crash, it "
            "resumes from the last finished epoch (with the same config and data; --restart otherwise). "
            "A folder holding a finished run or other files is refused unless --overwrite."
        ),
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", required=True, help="YAML or JSON run config, e.g. --config configs/classification.yaml (see below)")
    train.add_argument("--epochs", type=positive_int, default=None, help="override train.epochs, e.g. --epochs 3")
    train.add_argument("--out", default=None, help="override output (the run folder), e.g. --out runs/second")
    train.add_argument(
        "--strategy", default=None, choices=STRATEGIES,
        help="override train.strategy: auto (TPU, else all GPUs, else CPU), cpu, mirrored, tpu, or "
             "multi_worker (every machine runs the same command with its own TF_CONFIG), e.g. --strategy mirrored",
    )
    train.add_argument("--restart", action="store_true",
                       help="discard the backup of a killed run in the output folder and train from scratch "
                            "(needed when the config or data changed since), e.g. --restart")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the output folder as a whole (a finished run or other files in it are "
                            "refused otherwise), e.g. --overwrite")
    train.set_defaults(func=cmd_train)

    pretrain = sub.add_parser(
        "pretrain",
        help="pretrain a config's encoders as autoencoders on unlabelled files",
        description=(
            "Trains each feature of the model section as the encoder half of an autoencoder on data.train, "
            "without labels: images rebuilt from noisy pixels, audio's log-mel spectrogram from a noisy clip, "
            "masked text tokens predicted, other inputs denoised. Writes the run folder of train plus "
            "encoders/<feature>.weights.h5 and reconstruction.png; a classifier's config then takes "
            "model.<modality>_kwargs: {weights: RUN/encoders/<feature>.weights.h5}. Resumes like train."
        ),
        epilog="example:\n  mbm-keras pretrain --config configs/pretrain.yaml\n"
               "  then in configs/classification.yaml: model.image_kwargs: {weights: ../runs/pretrain/encoders/image.weights.h5}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pretrain.add_argument("--config", required=True,
                          help="YAML or JSON config (task.kind: autoencoder, or no task), e.g. --config configs/pretrain.yaml")
    pretrain.add_argument("--epochs", type=positive_int, default=None, help="override train.epochs, e.g. --epochs 3")
    pretrain.add_argument("--out", default=None, help="override output (the run folder), e.g. --out runs/pretrain")
    pretrain.add_argument("--strategy", default=None, choices=STRATEGIES,
                          help="override train.strategy, as for train, e.g. --strategy mirrored")
    pretrain.add_argument("--restart", action="store_true",
                          help="discard the backup of a killed run and start from scratch, e.g. --restart")
    pretrain.add_argument("--overwrite", action="store_true",
                          help="replace the output folder as a whole, e.g. --overwrite")
    pretrain.set_defaults(func=cmd_pretrain)

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
    init.set_defaults(func=cmd_init)

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
    check.set_defaults(func=cmd_check_data)

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
    pack.set_defaults(func=cmd_pack)

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
    embed.set_defaults(func=cmd_embed)

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
    index.set_defaults(func=cmd_index)

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
    search.set_defaults(func=cmd_search)

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
    evaluate.set_defaults(func=cmd_evaluate)

    transcribe = sub.add_parser(
        "transcribe",
        help="transcribe a clip with a transcription run (task: transcription) or its SavedModel export",
        description=(
            "Prints the transcript of one audio file. With a context model, --context gives the text the speech "
            "is fused with (names, numbers, the words on screen); without it the model's learned 'no context' "
            "input is used."
        ),
        epilog="examples (runs/transcription: mbm-keras train --config configs/transcription.yaml):\n"
               "  mbm-keras transcribe --model runs/transcription --audio data/demo/speech/0001.wav\n"
               "  mbm-keras transcribe --model runs/transcription --audio data/demo/speech/0001.wav "
               "--context \"do re mi , sol la\" --beam 8\n"
               "  mbm-keras transcribe --model runs/transcription --audio data/demo/speech/0001.wav "
               "--candidates \"do re mi\" \"sol la\"\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    transcribe.add_argument("--model", required=True, help="transcription run folder or SavedModel export, "
                                                           "e.g. --model runs/transcription")
    transcribe.add_argument("--audio", required=True, help="the clip (WAV, FLAC, OGG), "
                                                           "e.g. --audio data/demo/speech/0001.wav")
    transcribe.add_argument("--context", default=None, help='the text context, e.g. --context "do re mi , sol la"')
    transcribe.add_argument("--beam", type=positive_int, default=None, help="beam-search width (run folders; default: "
                                                                   "greedy), e.g. --beam 8")
    transcribe.add_argument("--candidates", nargs="+", default=None,
                            help="what the clip may say (contacts, numbers on screen): prints the candidate the model "
                                 "finds likeliest (CTC log-likelihood) instead of a free transcript, "
                                 'e.g. --candidates "do re mi" "sol la"')
    transcribe.set_defaults(func=cmd_transcribe)

    export = sub.add_parser(
        "export",
        help="export a trained run as a SavedModel (raw inputs) or a TFLite file (phones), checked against Keras",
        description=(
            "Writes a SavedModel (signature serving_default takes image bytes, text, WAV bytes, tabular cells; "
            "serve_tensors takes preprocessed tensors) or a batch-1, builtin-ops TFLite model with model.json, "
            "vocabulary.txt and a reference tokenizer.py. The export is checked against Keras on examples of "
            "--data (default: the run's validation manifest) and moved into place only when complete."
        ),
        epilog=EPILOG_EXPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--model", required=True, help="run folder (model.keras + preprocessor.json) or .keras file, e.g. --model runs/first")
    export.add_argument("--format", choices=["saved_model", "tflite", "onnx"], default="saved_model",
                        help="saved_model (GPU/TPU/CPU serving), tflite (edge/mobile) or onnx (ONNX Runtime: CUDA, "
                             "TensorRT, browsers), e.g. --format onnx (default: %(default)s)")
    export.add_argument("--out", default=None, help="export folder, e.g. --out saved_models/first-int8 (default: saved_models/<run>-<format>[-<quantize>])")
    export.add_argument("--quantize", choices=["none", "float16", "dynamic", "int8"], default="none",
                        help="TFLite weights/activations: none (float32), float16, dynamic (int8 weights), "
                             "int8 (int8 weights and activations, calibrated on --data), e.g. --quantize int8 (default: %(default)s)")
    export.add_argument("--data", default=None, help="manifest for int8 calibration and the check, e.g. --data data/demo/val.csv (default: the run's val/train)")
    export.add_argument("--examples", type=positive_int, default=100, help="examples for calibration and the check, e.g. --examples 300 (default: %(default)s)")
    export.add_argument("--allow-outside-root", action="store_true",
                        help="accept file paths in --data that resolve outside its folder, e.g. --allow-outside-root")
    export.set_defaults(func=cmd_export)

    predict = sub.add_parser(
        "predict",
        help="top classes for one example, from a .keras run, a SavedModel, or a .tflite or .onnx export",
        description="Runs one example through any mbm_keras model artifact and prints the top classes.",
        epilog=EPILOG_PREDICT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("--model", required=True, help="run folder / .keras file, SavedModel folder, or .tflite / .onnx file or export folder, e.g. --model saved_models/demo")
    predict.add_argument("--image", default=None, help="image file (JPEG, PNG, GIF, BMP), e.g. --image data/demo/images/0001.png")
    predict.add_argument("--text", default=None, help='the text, e.g. --text "a small red cat"')
    predict.add_argument("--audio", default=None, help="WAV file, e.g. --audio data/demo/audio/0001.wav")
    predict.add_argument("--tabular", default=None, help="tabular cells, comma-separated, numeric columns then categorical, e.g. --tabular 30.5,1400,kitty")
    predict.add_argument("--feature", action="append", metavar="NAME=VALUE",
                         help="a named feature's input (repeatable): a file path for image, audio and timeseries "
                              "features, the text for text features, comma-separated cells for tabular ones, e.g. "
                              "--feature image=data/demo/images/0001.png --feature 'text=a brown terrier'")
    predict.add_argument("--top", type=positive_int, default=3, help="classes to print, e.g. --top 5 (default: %(default)s)")
    predict.set_defaults(func=cmd_predict)

    zoo = sub.add_parser(
        "zoo",
        help="list the modalities, encoders and fusions",
        description="Prints the registered modalities with their encoders, a table of the encoders (modality, input, "
                    "parameters, pretrained weights) and the fusions.",
        epilog=EPILOG_ZOO,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from mbm_keras.modalities import list_modalities

    zoo.add_argument("--modality", choices=list_modalities(), help="only this modality's encoders, e.g. --modality text")
    zoo.set_defaults(func=cmd_zoo)
    return parser


def main(argv=None):
    _quiet_tensorflow()  # before make_parser, which imports TensorFlow (also for --help)
    args = make_parser().parse_args(argv)
    from mbm_keras.weights import PretrainedWeightsUnavailable
    from mbm_keras.deploy.onnx import OnnxExportError
    from mbm_keras.deploy.tflite import TFLiteExportError
    from mbm_keras.training.callbacks import TrainingDiverged

    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, NotImplementedError, PretrainedWeightsUnavailable, TFLiteExportError,
            OnnxExportError, TrainingDiverged) as e:
        # What a user can cause, each a one-line message naming the file, row, key or option: DataError,
        # ConfigError, IndexFileError are ValueErrors; a missing, unreadable or locked file an OSError.
        # Anything else is a bug and keeps its traceback.
        print(f"mbm-keras {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mbm-keras {args.command}: interrupted", file=sys.stderr)
        return 130


def one_line(error):
    from mbm_keras.deploy.onnx import OnnxExportError
    from mbm_keras.deploy.tflite import TFLiteExportError

    """An exception's message, control characters escaped (a file name or a cell may hold them); newlines are
    kept only for the converters' logs that TFLite and ONNX export errors carry."""
    from mbm_keras.io import printable

    text = str(error)
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return printable(text, newlines=isinstance(error, (TFLiteExportError, OnnxExportError)))


def run():
    """The `mbm-keras` console script: `main`, and after a failure a prompt exit.

    A command that fails while a tf.data pipeline is running (a row that does not decode, in `train`) has printed
    its error; the interpreter's shutdown would then wait on the pipeline's threads and destructors, which was
    seen to hang the process (issue 36). So a failed command flushes its output and ends the process at once.
    """
    import traceback

    try:
        code = main()
    except SystemExit as e:  # argparse: usage errors (2) and --help (0)
        code = e.code
    except BaseException:  # noqa: BLE001 -- a bug: its traceback, then the same prompt exit
        traceback.print_exc()
        code = 1
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)
    return code


if __name__ == "__main__":
    sys.exit(run())
