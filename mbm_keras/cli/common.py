"""What the subcommands share: argparse types for counts and `--feature name=value` items (terminal-safe text
is `mbm_keras.io.printable`)."""

import argparse


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


def feature_values(items):
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
