"""Runs several `mbm-keras` command lines in one fresh process: what each
printed, its exit code, and the traceback of anything the CLI let escape.

`mbm-keras` is `mbm_keras.cli:main`; each command line goes through it as the
console script would (argparse, the command, the CLI's error handling), with
its own stdout and stderr. One process for many cases saves TensorFlow's
start-up (about 5 s) per case; the cases whose point is a fresh process (a
module imported late, concurrent writers, a process that must exit) run
`python -m mbm_keras.cli` alone instead (tests/test_hostile.py: `cli`).

Usage: python tests/cli_batch.py '[["search", "--k", "0", ...], ...]'
"""

import contextlib
import io
import json
import os
import sys
import traceback

MARK = "@@cli_batch@@"


def run(argv):
    from mbm_keras.cli import main

    out, err, code, error = io.StringIO(), io.StringIO(), None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        except BaseException:  # noqa: BLE001 -- what a user would see as a traceback
            error = traceback.format_exc()
    return {"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "traceback": error}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = [run(argv) for argv in json.loads(sys.argv[1])]
    print(MARK + json.dumps(results))
