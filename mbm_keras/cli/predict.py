"""`mbm-keras predict`: one example through a run or an export."""

import argparse

from mbm_keras.cli.common import feature_values, positive_int
from mbm_keras.io import printable

EPILOG_PREDICT = """examples:
  mbm-keras predict --model saved_models/demo --image data/demo/images/0001.png --text "a brown terrier" \
      --audio data/demo/audio/0001.wav
  mbm-keras predict --model saved_models/first-tflite-int8/model.tflite --image data/demo/images/0001.png --text "a dog"
  mbm-keras predict --model runs/first --feature image=data/demo/images/0001.png --feature text="a dog"
  mbm-keras predict --model runs/tabular --tabular 30.5,1400,kitty     # configs/tabular.yaml's run
"""


def add_parser(sub):
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
    predict.set_defaults(func=command)


def command(args):
    from mbm_keras.deploy import predict

    tabular = args.tabular.split(",") if args.tabular is not None else None
    features = feature_values(args.feature)
    results = predict(args.model, image=args.image, text=args.text, audio=args.audio, tabular=tabular, top=args.top,
                      features=features)
    for name, value in results:
        print(printable(f"{name:<30}{value:.4f}" if isinstance(value, float) else f"{name:<30}{value}"))
    return 0
