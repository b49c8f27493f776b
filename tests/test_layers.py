"""The package's layer order (setup.cfg [importlinter], docs/ARCHITECTURE.md) holds: no import cycle between
layers and no import up the order, checked by import-linter on every import statement (function-level ones
too); no module in mbm_keras/ is longer than 600 lines and no function longer than 80."""

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
