"""`mbm-keras export`: a run exported as a SavedModel, TFLite or ONNX file."""

import argparse

from mbm_keras.cli.common import positive_int

EPILOG_EXPORT = """examples:
  mbm-keras export --model runs/first --format saved_model --out saved_models/first
  mbm-keras export --model runs/first --format tflite --quantize int8 --out saved_models/first-int8
  mbm-keras export --model runs/first --format onnx --out saved_models/first-onnx
"""


def add_parser(sub):
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
    export.set_defaults(func=command)


def command(args):
    from mbm_keras.deploy import export_model

    export_model(args.model, args.format, args.out, quantize=args.quantize, data=args.data,
                 num_examples=args.examples, allow_outside_root=args.allow_outside_root)
    return 0
