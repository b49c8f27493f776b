"""One cheap in-graph check for the decoders and the serving signature."""

import ast
import re

import tensorflow as tf


def check(condition, pieces):
    """An assertion op: raises InvalidArgumentError "assertion failed: [piece] [piece]..."
    when `condition` is false. The pieces (strings and scalar tensors; never raw
    file bytes) are formatted only then, and unlike `tf.debugging.Assert` inside
    a traced function there is no cond around it: this runs for every example.
    `mbm_keras.deploy.raw_inputs.explain` joins the pieces back into one line.

    Examples:
        >>> with tf.control_dependencies([check(n <= limit, ["audio of ", n, " samples is too long"])]):
        ...     samples = tf.identity(samples)
    """
    return tf.raw_ops.Assert(condition=condition, data=[tf.convert_to_tensor(p) for p in pieces], summarize=3)


def _clean(line):
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line).strip()
    return re.sub(r"\s*\[Op:[^]]*\].*$|\s*\[\[.*$", "", line).strip()


def explain(error):
    """The reason in a TensorFlow error raised by the ops above, as one line:
    the message of a failed assertion, else TensorFlow's own reason, without
    the traceback, graph-node and function-name decorations around it.

    Examples:
        >>> explain(e)   # "Unknown image file format. One of JPEG, PNG, GIF, BMP required."
    """
    text = getattr(error, "message", None) or str(error)
    found = re.search(r"assertion failed: (\[.*)$", text, flags=re.M)
    if found:  # "[piece] [7] [piece]", maybe followed by " [Op:Assert]" or " name: "
        line = re.sub(r"(\s*\[Op:[^]]*\])?(\s*name:.*)?\s*$", "", found.group(1))
        pieces = re.findall(r"\[(.*?)\](?: |$)", line)
        return "".join(pieces).replace("\\'", "'").replace("\\n", " ")
    found = re.search(r"Summarized data: (.*?)(?:\n\n|$)", text, flags=re.S)
    if found:  # eager mode: one piece a line, strings as b'...'
        pieces = []
        for piece in found.group(1).strip().splitlines():
            try:
                value = ast.literal_eval(piece)
            except (ValueError, SyntaxError):
                value = piece
            pieces.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
        return "".join(pieces)
    lines = text.splitlines()
    for line in reversed(lines):  # "in user code" blocks end with "    SomeError: reason"
        found = re.match(r"\s+\w+Error: (.+)$", line)
        if found:
            return _clean(found.group(1))
    for i, line in enumerate(lines):  # graph errors: the reason comes right before "[[{{node ...}}]]"
        if line.strip().startswith("[[") and i > 0 and _clean(lines[i - 1]):
            return _clean(lines[i - 1])
    for line in lines:
        if _clean(line) and not re.match(r"(Graph execution error|Detected at node|<stack traces)", line.strip()):
            return _clean(line)
    return type(error).__name__
