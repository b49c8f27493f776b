"""The `mbm-keras` command line: one module per subcommand (`mbm_keras/cli/<command>.py`, each an `add_parser`
and a `command`), put together here with the error handling they share."""

import argparse
import importlib
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

# The subcommands in the order --help lists them: mbm_keras/cli/<module>.py each.
COMMANDS = ("demo", "train", "tune", "pretrain", "init", "check_data", "pack", "embed", "index", "search",
            "evaluate", "explain", "transcribe", "export", "predict", "serve", "zoo")


def _quiet_tensorflow():
    # TensorFlow's C++ start-up lines (CUDA probing on CPU machines) are noise here.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_parser():
    """The `mbm-keras` parser: each subcommand's module adds its own."""
    parser = argparse.ArgumentParser(
        prog="mbm-keras",
        description="Multimodal fusion models in Keras 3: build, train, export.",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mbm_keras.cli.{name}").add_parser(sub)
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
