"""`mbm-keras tune`: search a run config's `search:` section with KerasTuner; each trial a run folder."""

import argparse

from mbm_keras.cli.common import non_negative_int, positive_int


def add_parser(sub):
    tune = sub.add_parser(
        "tune",
        help="search encoders, fusions and training settings (the config's search: section) with KerasTuner",
        description="Each trial is an ordinary run folder, RUN/trials/<trial id>/, trained with the config's "
                    "settings and the trial's choices, and scored on validation (data.val, or the run's default "
                    "hold-out). A search killed at any point resumes where it stopped when run again. At the end: "
                    "RUN/trials.csv, RUN/trials.png and RUN/best.yaml (for mbm-keras train --config): the best "
                    "trial's config if it beats the config as written (trained too, as RUN/trials/baseline/) by "
                    "more than the validation score's noise, and again when both train on --confirm fresh "
                    "validation splits (RUN/confirm/), else the config as written.",
        epilog="examples:\n"
               "  mbm-keras tune --config configs/tune.yaml --trials 8\n"
               "  mbm-keras tune --config configs/tune.yaml --algorithm hyperband --max-time 3600\n"
               "  mbm-keras train --config runs/tune/best.yaml\n"
               "distributed (KerasTuner's variables): the same command as a chief and as workers, e.g.\n"
               "  KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=8000 mbm-keras tune ...\n"
               "  KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=8000 mbm-keras tune ...\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument("--config", required=True, help="run config with a search: section, e.g. --config configs/tune.yaml")
    tune.add_argument("--trials", type=positive_int, default=10,
                      help="the most trials (random and bayesian), e.g. --trials 20 (default: %(default)s)")
    tune.add_argument("--algorithm", choices=("bayesian", "hyperband", "random"), default="bayesian",
                      help="how the next trial is chosen, e.g. --algorithm random (default: %(default)s)")
    tune.add_argument("--max-time", type=positive_int, default=None,
                      help="seconds after which no new trial starts, e.g. --max-time 3600 (default: no limit)")
    tune.add_argument("--max-epochs", type=positive_int, default=None,
                      help="hyperband: the most epochs of a trial, e.g. --max-epochs 27 (default: train.epochs)")
    tune.add_argument("--no-baseline", dest="baseline", action="store_false",
                      help="do not train the config as written to compare the best trial with, e.g. --no-baseline")
    tune.add_argument("--confirm", type=non_negative_int, default=2, metavar="K",
                      help="when the best trial beats the config as written, train both again K times with other "
                           "seeds (other validation rows, other initial weights) and keep the trial only if it still "
                           "wins; 0: trust the search's own validation, e.g. --confirm 3 (default: %(default)s)")
    tune.add_argument("--overwrite", action="store_true",
                      help="discard an earlier search in the run folder (default: resume it), e.g. --overwrite")
    tune.set_defaults(func=command)


def command(args):
    from mbm_keras.tuning import tune

    result = tune(args.config, trials=args.trials, algorithm=args.algorithm, max_time=args.max_time,
                  max_epochs=args.max_epochs, overwrite=args.overwrite, baseline=args.baseline,
                  confirm=args.confirm)
    best = result["best"]
    if best is None:  # a worker of a distributed search: the chief reports
        print(f"Worker done: its trials are in {result['output']}/trials; the chief writes the table and best.yaml")
        return 0
    print(f"Kept after {len(result['trials'])} trials: {result['why']} (validation {best['metric']} "
          f"{best['score']:.4f}); its config: {result['best_config']}")
    return 0
