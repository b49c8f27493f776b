import subprocess
import sys

from mbm_keras.cli import main


def test_help_describes_every_command():
    out = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "--help"], capture_output=True, text=True).stdout
    assert "demo" in out and "zoo" in out
    for cmd, words in {"demo": ["--out", "--data-dir", "--seed", "--epochs", "example:"], "zoo": ["--modality", "example:"]}.items():
        out = subprocess.run([sys.executable, "-m", "mbm_keras.cli", cmd, "--help"], capture_output=True, text=True).stdout
        for word in words:
            assert word in out, (cmd, word)


def test_zoo_lists_encoders_with_parameters(capsys):
    assert main(["zoo", "--modality", "text"]) == 0
    out = capsys.readouterr().out
    for name in ("lstm", "bilstm", "gru", "cnn"):
        assert f"\n{name} " in out
    assert "1,346,048" in out  # bilstm at 64 tokens, 20,000-word vocabulary
    assert "resnet50" not in out
