"""`mbm-keras transcribe`: the transcript of one clip."""

import argparse

from mbm_keras.cli.common import positive_int
from mbm_keras.io import printable


def add_parser(sub):
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
    transcribe.set_defaults(func=command)


def command(args):
    from mbm_keras.deploy.transcribing import transcribe

    print(printable(transcribe(args.model, args.audio, context=args.context, beam=args.beam, candidates=args.candidates)))
    return 0
