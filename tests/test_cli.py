import subprocess
import sys

from mbm_keras.cli import main


def test_help_describes_every_command(tmp_path):
    from helpers import batch

    # One fresh process runs the three command lines through the console script's main (cli_batch.py).
    results = batch({"top": ["--help"], "demo": ["demo", "--help"], "zoo": ["zoo", "--help"]}, tmp_path)
    assert results["top"]["code"] == 0 and "demo" in results["top"]["stdout"] and "zoo" in results["top"]["stdout"]
    for cmd, words in {"demo": ["--out", "--data-dir", "--seed", "--epochs", "example:"], "zoo": ["--modality", "example:"]}.items():
        assert results[cmd]["code"] == 0 and results[cmd]["traceback"] is None
        for word in words:
            assert word in results[cmd]["stdout"], (cmd, word)


def test_zoo_lists_encoders_with_parameters(capsys):
    assert main(["zoo", "--modality", "text"]) == 0
    out = capsys.readouterr().out
    for name in ("lstm", "bilstm", "gru", "cnn"):
        assert f"\n{name} " in out
    assert "1,346,048" in out  # bilstm at 64 tokens, 20,000-word vocabulary
    assert "resnet50" not in out
