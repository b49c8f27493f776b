"""Documentation that a newcomer relies on: docstrings of the public API, the
CLI's help, the README's links, docs/ARCHITECTURE.md."""

import argparse
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = ["mbm_keras", "mbm_keras.data", "mbm_keras.deploy", "mbm_keras.training", "mbm_keras.evaluate",
                  "mbm_keras.io", "mbm_keras.modalities", "mbm_keras.demo", "mbm_keras.retrieval",
                  "mbm_keras.transcription", "mbm_keras.pretraining", "mbm_keras.hub", "mbm_keras.serve"]


def public_api():
    seen = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", None) or [a for a in dir(module) if not a.startswith("_")]:
            obj = getattr(module, attr)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("mbm_keras"):
                seen.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return seen


def test_public_api_is_found():
    names = public_api()
    assert len(names) > 60
    assert "mbm_keras.fusion_model.build_fusion_model" in names and "mbm_keras.training.loop.distributed_fit" in names


@pytest.mark.parametrize("name", sorted(public_api()))
def test_every_public_function_has_args_and_an_example(name):
    obj = public_api()[name]
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    if inspect.isfunction(obj) and inspect.signature(obj).parameters:
        assert "Args:" in doc, f"{name}'s docstring has no Args: section"
        for param in inspect.signature(obj).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            assert re.search(rf"\b{param.name}\b", doc), f"{name}'s docstring does not describe argument {param.name!r}"
    assert ">>>" in doc, f"{name}'s docstring has no example (>>>)"


def _subparsers():
    from mbm_keras.cli import make_parser

    parser = make_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_every_cli_option_has_help_and_every_command_an_example():
    parser, commands = _subparsers()
    assert set(commands) == {"demo", "train", "pretrain", "check-data", "pack", "embed", "index", "search", "evaluate", "export",
                             "predict", "zoo", "init", "transcribe", "serve", "explain", "tune"}
    assert "example" in parser.format_help()
    for name, sub in commands.items():
        text = sub.format_help()
        assert "example" in text and f"mbm-keras {name}" in sub.epilog, f"mbm-keras {name} --help shows no example"
        for action in sub._actions:
            if action.dest != "help":
                assert action.help and "e.g. " + action.option_strings[0] in action.help, \
                    f"mbm-keras {name} {action.option_strings}: help without an example: {action.help!r}"


def test_zoo_table_has_every_column(capsys):
    from mbm_keras.cli import main

    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:7] == ["encoder", "modality", "input", "params", "features", "pretrained", "tflite"]
    assert re.search(r"^bilstm .* f32 f16 dyn int8\* ", out, re.M) and re.search(r"^resnet50 .* imagenet +f32 f16 dyn int8 ", out, re.M)
    assert "low_rank_tensor" in out


def test_readme_links_exist_and_architecture_names_real_modules():
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README links to missing {link}"
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.name}" in readme, f"README does not link {notebook.name}"
    arch = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for path in re.findall(r"`(mbm_keras/[\w/]+\.py)`", arch):
        assert (ROOT / path).is_file(), f"ARCHITECTURE.md names missing {path}"


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(# README example.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 21  # the comment line + 20
    (tmp_path / "saved_models").mkdir()
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = float(re.search(r"'accuracy': ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.5, proc.stdout[-2000:]  # chance is 0.125; a single modality tops out near 0.25
    assert (tmp_path / "saved_models" / "readme.keras").is_file() and (tmp_path / "saved_models" / "readme.tflite").is_file()


def test_the_docs_site_builds_strict(tmp_path):
    """MkDocs with --strict: every page, link and API reference entry resolves (a docstring that breaks the
    reference, or a guide that links a missing page, fails here). The README stays a short first page."""
    import os

    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "data" / "index.html").read_text()
    assert "make_dataset" in api and "fit_preprocessor" in api
    assert (tmp_path / "site" / "config" / "index.html").is_file()
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    for guide in sorted((ROOT / "docs" / "guides").glob("*.md")):
        assert f"docs/guides/{guide.name}" in readme, f"README does not link {guide.name}"
