"""How long the test suite takes, and where the time goes.

    python benchmarks/suite.py              # make test-fast's selection (-m "not slow")
    python benchmarks/suite.py --all        # make test's
    python benchmarks/suite.py --log run.log  # read an earlier run's output instead

Runs pytest as the Makefile does (two xdist workers, one module per worker at a time) with
`--durations=0`, then prints the wall time, the test time summed over both workers (setup, call and
teardown of every test), how busy the workers were (summed time / (2 x wall)), and the modules and tests
that take the most. The figure to compare before and after a change is the wall time of two runs made
side by side on one machine; the per-module sums say where to look.
"""

import argparse
import collections
import re
import subprocess
import sys
import time

LINE = re.compile(r"^([0-9.]+)s (setup|call|teardown)\s+(\S+)")
WALL = re.compile(r"in ([0-9.]+)s \(")


def parse(text):
    """`(wall seconds or None, {test id: seconds})` from pytest's output with `--durations=0`."""
    per_test = collections.Counter()
    for line in text.splitlines():
        match = LINE.match(line.strip())
        if match:
            per_test[match.group(3)] += float(match.group(1))
    walls = WALL.findall(text)
    return (float(walls[-1]) if walls else None), per_test


def report(wall, per_test, workers=2, top=15):
    total = sum(per_test.values())
    per_module = collections.Counter()
    for test, seconds in per_test.items():
        per_module[test.split("::")[0]] += seconds
    lines = [f"tests: {len(per_test)}", f"test time summed over the workers: {total:.0f} s"]
    if wall:
        lines += [f"wall: {wall:.0f} s ({wall / 60:.1f} min)",
                  f"workers busy: {100 * total / (workers * wall):.0f}% of {workers} x wall"]
    lines.append(f"\nmodules by summed time (top {top}):")
    lines += [f"  {seconds:7.1f} s  {module}" for module, seconds in per_module.most_common(top)]
    lines.append(f"\ntests by time (top {top}):")
    lines += [f"  {seconds:7.1f} s  {test}" for test, seconds in per_test.most_common(top)]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="make test's selection (slow tests too)")
    parser.add_argument("--log", help="read this pytest output (run with --durations=0) instead of running")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    if args.log:
        try:
            with open(args.log, encoding="utf-8", errors="replace") as f:
                wall, per_test = parse(f.read())
        except OSError as e:
            parser.error(f"--log {args.log}: {e.strerror}")
        if not per_test:
            parser.error(f"--log {args.log}: no test durations in it (run pytest with --durations=0)")
    else:
        cmd = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadscope", "--durations=0", "-q"]
        if not args.all:
            cmd += ["-m", "not slow"]
        print("running:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall, per_test = parse(proc.stdout)
        wall = wall or time.perf_counter() - start
        if proc.returncode:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            print(f"pytest exited with {proc.returncode}", file=sys.stderr)
    print(report(wall, per_test, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
