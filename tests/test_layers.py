"""The package's layer order (setup.cfg [importlinter], docs/ARCHITECTURE.md) holds: no import cycle between
layers and no import up the order, checked by import-linter on every import statement (function-level ones
too); no module in mbm_keras/ is longer than 600 lines and no function longer than 80."""

import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_the_layers_contract_is_kept():
    from importlinter import cli

    # lint_imports returns 0 when every contract is kept; it prints the broken imports otherwise.
    assert cli.lint_imports(config_filename=os.path.join(ROOT, "setup.cfg"), no_cache=True) == 0


def test_the_contract_covers_every_module_of_the_package():
    """A new module must be placed in a layer (or sit in a package that is one), or the contract says nothing of it."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    layers = [part.strip() for line in parser["importlinter:contract:layers"]["layers"].split("\n") if line.strip()
              for part in line.replace("|", ":").split(":")]
    package = os.path.join(ROOT, "mbm_keras")
    missing = []
    for folder, _, files in os.walk(package):
        for name in files:
            if not name.endswith(".py"):
                continue
            module = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
            module = module.removesuffix(".__init__")
            if module.count(".") == 0 or name == "__init__.py" and module.count(".") == 1 and module not in layers:
                continue  # the root package, and packages whose modules are placed one by one
            if not any(module == layer or module.startswith(layer + ".") for layer in layers):
                missing.append(module)
    assert not missing, f"modules in no layer of setup.cfg's contract: {missing}"


def test_no_module_is_longer_than_600_lines():
    long = []
    for folder, _, files in os.walk(os.path.join(ROOT, "mbm_keras")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    count = sum(1 for _ in f)
                if count > 600:
                    long.append(f"{os.path.relpath(path, ROOT)}: {count} lines")
    assert not long, long


def test_no_function_is_longer_than_80_lines():
    """Counted from `def` to its last line, its docstring left out (a long docstring is documentation, not
    code to read through)."""
    import ast

    long = []
    for folder, _, files in os.walk(os.path.join(ROOT, "mbm_keras")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    first = node.body[0]
                    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                            isinstance(first.value.value, str):
                        lines -= first.end_lineno - first.lineno + 1
                    if lines > 80:
                        long.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, long


def _requirement_names(block):
    import re

    return {re.split(r"[<>=!\[; ]", line.strip())[0].lower().replace("_", "-")
            for line in block.strip().splitlines() if line.strip()}


def _with_dependencies(names):
    """`names` and every distribution they require, transitively (installed metadata)."""
    import importlib.metadata as md
    import re

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [re.split(r"[<>=!\[; (]", r)[0].lower().replace("_", "-") for r in requires if "extra ==" not in r]
    return seen


def test_every_third_party_import_is_installed_with_mbm_keras_or_named_by_its_extra():
    """A plain `pip install mbm_keras` (what `make demo` does) has what the package imports; an optional
    extra's module (onnx, audio) is imported where the file says how to install it. ai-edge-litert sat in the
    dev extra, so TFLite export failed after `make demo`."""
    import configparser
    import importlib.metadata as md
    import sys

    from pathlib import Path

    root = Path(ROOT)
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    runtime = _with_dependencies(_requirement_names(cfg["options"]["install_requires"]))
    optional = {extra: _with_dependencies(_requirement_names(block))
                for extra, block in cfg["options.extras_require"].items() if extra != "dev"}
    distributions = md.packages_distributions()
    wrong = []
    for path in sorted((root / "mbm_keras").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "mbm_keras":
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
                if dists & runtime:
                    continue
                extras = [extra for extra, names in optional.items() if dists & names]
                if not extras or "pip install" not in text:
                    wrong.append(f"{path.relative_to(root)}:{node.lineno} imports {top} ({', '.join(dists) or '?'}), "
                                 f"in no install_requires{'' if not extras else ' and says no pip install'}")
    assert not wrong, "\n".join(wrong)
