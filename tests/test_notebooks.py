"""The notebooks in notebooks/ run top to bottom, unedited, in a real Jupyter
kernel (nbclient), offline, on the built-in demo data; their own cells assert
what they show (reload parity, identical worker weights, export checks)."""

import json
import shutil
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_quickstart", "02_audio_image_text", "03_export_edge", "04_distributed_tpu", "05_named_features",
         "06_search_engine", "07_transcription", "08_explain"]


def test_every_notebook_is_tested_and_committed_with_its_outputs():
    """Committed executed, so tables, plots and pictures show when browsing the
    repository (as keras.io examples do); the classes below re-execute each one
    from scratch."""
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c.get("execution_count") for c in code), f"{name}.ipynb has cells that were not run"
        assert sum(bool(c.get("outputs")) for c in code) >= len(code) // 2, f"{name}.ipynb is committed without outputs"
        assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])), \
            f"{name}.ipynb is committed with an error in its outputs"
        outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
        assert len(outputs) < 1_500_000, f"{name}.ipynb carries {len(outputs)} bytes of outputs; shrink its pictures"
        first = "".join(nb["cells"][0]["source"])
        assert nb["cells"][0]["cell_type"] == "markdown" and "What this notebook shows" in first and "**Time:**" in first


def run_notebook(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # Every cell runs; training runs last one epoch (the notebooks read this variable).
    monkeypatch.setenv("MBM_KERAS_NOTEBOOK_EPOCHS", "1")
    # A copy, so the outputs and ../saved_models land in tmp_path.
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", work)
    shutil.copytree(NOTEBOOKS.parent / "configs", tmp_path / "configs")  # ../configs, as in the repository
    nb = nbformat.read(work / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = "\n".join(
        o.get("text", "") if o.get("output_type") == "stream" else json.dumps(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    return text, tmp_path / "saved_models"


# One class per notebook: pytest-xdist's --dist loadscope sends each class to
# its own worker, so the four notebooks run two at a time.
@pytest.mark.slow
class TestQuickstart:
    def test_runs(self, tmp_path, monkeypatch):
        text, out = run_notebook("01_quickstart", tmp_path, monkeypatch)
        assert "test accuracy" in text and "reloaded model max |diff|" in text
        assert (out / "notebook01" / "model.keras").is_file()
        if shutil.which("dot"):  # `make test` installs Graphviz where it can
            assert (tmp_path / "notebooks" / "quickstart_model.png").is_file()
        else:
            assert "Graphviz's `dot` program is not installed" in text and "Total params" in text


@pytest.mark.slow
class TestThreeModalities:
    def test_runs(self, tmp_path, monkeypatch):
        text, out = run_notebook("02_audio_image_text", tmp_path, monkeypatch)
        for name in ("concat", "gated", "attention", "low_rank_tensor", "late", "image only", "audio only"):
            assert name in text
        assert list((out / "notebook02").glob("robustness-*.png"))


@pytest.mark.slow
class TestExportEdge:
    def test_runs(self, tmp_path, monkeypatch):
        text, out = run_notebook("03_export_edge", tmp_path, monkeypatch)
        assert "TFLite int8" in text and "without audio" in text
        assert (out / "notebook03" / "tflite-int8" / "model.tflite").is_file()


@pytest.mark.slow
class TestDistributed:
    def test_runs(self, tmp_path, monkeypatch):
        text, _ = run_notebook("04_distributed_tpu", tmp_path, monkeypatch)
        assert "replicas: 2" in text and "No TPU on this machine" in text
        assert "identical weights: True" in text


@pytest.mark.slow
class TestNamedFeatures:
    def test_runs(self, tmp_path, monkeypatch):
        text, out = run_notebook("05_named_features", tmp_path, monkeypatch)
        assert "test accuracy" in text and "tflite vs keras max |diff|" in text
        assert (out / "notebook05-tflite" / "model.tflite").is_file()


@pytest.mark.slow
class TestSearchEngine:
    def test_runs(self, tmp_path, monkeypatch):
        text, _ = run_notebook("06_search_engine", tmp_path, monkeypatch)
        assert "items indexed" in text and "top 5:" in text and "'mrr'" in text


@pytest.mark.slow
class TestTranscription:
    def test_runs(self, tmp_path, monkeypatch):
        text, _ = run_notebook("07_transcription", tmp_path, monkeypatch)
        assert "test WER" in text and "among 3 candidates" in text and "kept:" in text


@pytest.mark.slow
class TestExplain:
    def test_runs(self, tmp_path, monkeypatch):
        monkeypatch.delenv("MBM_KERAS_AV_DIGITS_DATA", raising=False)  # beside a clone: the demo data stands in
        text, _ = run_notebook("08_explain", tmp_path, monkeypatch)
        assert "explaining the built-in demo data's image + audio classifier instead" in text
        assert "mean Shapley values:" in text and "another row's sound" in text
