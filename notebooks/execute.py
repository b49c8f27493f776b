"""Executes every notebook in place (full settings) so it is committed with its outputs.

Run from the repository root: .venv/bin/python notebooks/execute.py [notebooks/NN_name.ipynb ...]
"""
import sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

folder = Path("notebooks")
for path in sorted(folder.glob("*.ipynb")) if len(sys.argv) == 1 else [Path(p) for p in sys.argv[1:]]:
    t = time.time()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    for cell in nb.cells:  # strip run-specific metadata noise
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, path)
    print(f"{path}: {time.time() - t:.0f} s", flush=True)
