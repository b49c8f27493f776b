"""`mbm-keras train`: train the model a run config describes."""

import argparse

from mbm_keras.cli.common import positive_int

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


def add_parser(sub):
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
    train.set_defaults(func=command)


def command(args):
    from mbm_keras.training import train

    result = train(args.config, epochs=args.epochs, output=args.out, strategy=args.strategy, restart=args.restart,
                   overwrite=args.overwrite)
    print(f"Run written to {result['output']}")
    return 0
