"""`mbm-keras pretrain`: autoencoder pretraining of a config's encoders."""

import argparse

from mbm_keras.cli.common import positive_int


def add_parser(sub):
    from mbm_keras.training.strategy import STRATEGIES

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
    pretrain.set_defaults(func=command)


def command(args):
    from mbm_keras.training import pretrain

    result = pretrain(args.config, epochs=args.epochs, output=args.out, strategy=args.strategy, restart=args.restart,
                      overwrite=args.overwrite)
    picture = result["summary"].get("picture")  # only the chief writes it under multi_worker
    print(f"Run written to {result['output']}" + (f"; reconstructions: {picture}" if picture else ""))
    return 0
