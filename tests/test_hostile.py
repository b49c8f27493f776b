"""Hostile and careless use of the commands added since the second hardening
round (retrieval, transcription, shards, check-data, init, exports), through
`mbm-keras` as a user runs it: every error a user can cause is one line naming
the file, row, key or option, with exit code 1 or 2; nothing is lost or read
outside the data folder. Issue 36's cases, one assertion each.

The command lines run in fresh processes: alone (`cli`) where the process is
the point, else several per process (`batch`, tests/cli_batch.py)."""

import io
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import batch, cli, write_pcm_wav  # noqa: F401 (batch: test_tasks imports it from here too)
from test_data import make_files, write_csv, write_wav
from test_training import run_config

from mbm_keras.retrieval import Index, IndexFileError

HERE = Path(__file__).resolve().parent


def assert_user_error(result, *fragments, code=2):
    """Exit `code`, one 'mbm-keras CMD: error: ...' line holding each fragment, no traceback."""
    assert result["traceback"] is None, result["traceback"]
    lines = [line for line in result["stderr"].splitlines() if line.startswith("mbm-keras ")]
    assert result["code"] == code and len(lines) == 1, (result["code"], result["stderr"][-2000:])
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A retrieval run (tabular query -> image), its index and pack, and a transcription run and its TFLite
    export: trained once, tiny."""
    from mbm_keras.deploy import export_model
    from mbm_keras.retrieval.search import build_index
    from mbm_keras.training import train

    root = tmp_path_factory.mktemp("hostile")
    folder = root / "retrieval"
    folder.mkdir()
    path = run_config(folder, task__kind="retrieval", task__query=["tabular"], task__candidate=["image"],
                      task__embedding_dim=8, train__epochs=2,
                      data__columns={"image": "img", "tabular": {"numeric": ["age"], "categorical": ["city"]},
                                     "label": "label"})
    config = json.loads(path.read_text())
    config["model"] = {"image": "small_cnn", "tabular": "mlp", "fusion": "concat"}
    path.write_text(json.dumps(config))
    train(str(path), verbose=0)
    build_index(str(folder / "run"), str(folder / "train.csv"), str(root / "catalogue.index"), progress=False)

    speech = root / "speech"
    (speech / "wav").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        said = ("do re", "re do", "mi")[i % 3]
        t = np.arange(4000) / 8000
        write_wav(speech / "wav" / f"{i}.wav", 0.4 * np.sin(2 * np.pi * (300 + 200 * (i % 3)) * t)
                  + 0.01 * rng.normal(size=t.shape))
        rows.append({"wav": f"wav/{i}.wav", "said": said})
    write_csv(speech / "train.csv", rows[:18])
    write_csv(speech / "val.csv", rows[18:])
    train({"data": {"train": str(speech / "train.csv"), "val": str(speech / "val.csv"),
                    "columns": {"audio": "wav", "label": "said"},
                    "preprocessing": {"sample_rate": 8000, "audio_length": 4000}, "batch_size": 6},
           "model": {"audio": "logmel_tcn", "audio_kwargs": {"units": 8, "dilations": [1]}},
           "task": {"kind": "transcription"}, "train": {"epochs": 1}, "output": str(speech / "run")}, verbose=0)
    export_model(str(speech / "run"), "tflite", str(speech / "tflite"))
    return root


# --- 1. A retrieval run exports in a fresh process --------------------------------------------------------------

@pytest.mark.slow  # one export subprocess (evaluate's: tests/test_validation.py)
def test_a_retrieval_run_exports_from_a_fresh_process(runs, tmp_path):
    proc = cli("export", "--model", runs / "retrieval" / "run", "--format", "saved_model", "--out", tmp_path / "sm")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "sm" / "saved_model.pb").is_file() and "top-10 overlap 100.0%" in proc.stdout


# --- 2. check-data reads the bytes stored in shards ----------------------------------------------------------------

def _pack(runs, name, **kw):
    from mbm_keras.data.shards import pack

    out = runs / "packs" / name
    pack(str(runs / "retrieval" / "train.csv"), str(out), progress=False, **kw)
    return out


def test_check_data_reads_a_healthy_shard_folder_from_its_shards(retrieval_cli):
    result = retrieval_cli[0]["healthy_shards"]
    assert result["code"] == 0, result
    assert "24 of 24 rows usable, 0 problem(s)" in result["stdout"]


# --- 3. Two writers of one index keep both their rows -------------------------------------------------------------

def test_concurrent_index_adds_keep_every_row(runs, tmp_path):
    shutil.copy(runs / "catalogue.index", tmp_path / "shared.index")
    run = runs / "retrieval" / "run"
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda part: cli("index", "--model", run, "--data", runs / "retrieval" / part,
                                               "--out", tmp_path / "shared.index", "--add", "--quiet"),
                              ("train.csv", "val.csv")))
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-2000:]
    index = Index.load(tmp_path / "shared.index")
    assert len(index) == 24 + 24 + 8  # the catalogue, then both additions: no row lost
    assert sorted(r["row"] for r in index.rows).count(1) == 3


# --- 4 and 5. search --k, crafted index files ---------------------------------------------------------------------

def test_search_k_below_one_is_refused(retrieval_cli):
    results, runs = retrieval_cli
    result = results["k_negative"]
    assert result["code"] == 2 and "argument --k: must be a whole number >= 1. Received: -3" in result["stderr"]
    assert result["stdout"] == ""
    with pytest.raises(ValueError, match="k \\(the number of results\\) must be a positive int. Received: k=0"):
        Index.load(runs / "catalogue.index").search(np.ones((1, 8)), k=0)


def _index_parts(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _write_index(path, parts, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    return buffer.getvalue()


def test_a_crafted_index_file_is_bounded_before_anything_is_inflated(runs, tmp_path):
    parts = _index_parts(runs / "catalogue.index")
    meta = json.loads(parts["meta.json"])
    # 400 MB of vectors announced and deflated to a few hundred KB: refused without inflating them.
    count = 400_000_000 // (4 * meta["dim"])
    header = _npy(np.zeros((1, meta["dim"])))[:128].replace(f"(1, {meta['dim']})".encode(),
                                                             f"({count}, {meta['dim']})".encode().ljust(
                                                                 len(f"(1, {meta['dim']})")))
    bomb = tmp_path / "bomb.index"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.json", json.dumps({**meta, "count": count}))
        with z.open("vectors.npy", "w", force_zip64=True) as f:
            f.write(header)
            for _ in range(count * meta["dim"] * 4 // (1 << 24)):
                f.write(bytes(1 << 24))
        z.writestr("rows.json", "[]")
    assert bomb.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(IndexFileError, match="is compressed inside the file"):
            Index.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak
    # Stored, but meta.json announces fewer rows than vectors.npy holds: refused by the sizes, before reading.
    stored = _write_index(tmp_path / "stored.index", {**parts, "meta.json": json.dumps({**meta, "count": 1}).encode()})
    with pytest.raises(IndexFileError, match=r"announces 1 rows of 8 float32 \(32 bytes\); vectors.npy holds a \(24, 8\) float32 array"):
        Index.load(stored)


@pytest.fixture(scope="module")
def crafted(runs):
    """Damaged copies of the catalogue's index, by name."""
    parts = _index_parts(runs / "catalogue.index")
    meta = json.loads(parts["meta.json"])
    vectors = np.load(io.BytesIO(parts["vectors.npy"]))
    nan = vectors.copy()
    nan[3] = np.nan
    folder = runs / "crafted"
    folder.mkdir()
    variants = {
        "nokey": {"meta.json": json.dumps({k: v for k, v in meta.items() if k != "dim"})},
        "unknownkey": {"meta.json": json.dumps({**meta, "extra": 1})},
        "rowstrings": {"rows.json": json.dumps(["a"] * meta["count"])},
        "nan": {"vectors.npy": _npy(nan)},
        "scaled": {"vectors.npy": _npy(vectors * 100)},
    }
    return {name: _write_index(folder / f"{name}.index", {**parts, **change}) for name, change in variants.items()}


@pytest.mark.parametrize("name, message", [
    ("nokey", "meta.json lacks dim"),
    ("unknownkey", "meta.json has unknown key(s) extra"),
    ("rowstrings", "rows.json's entry 0 is str 'a', not an object of the row's cells"),
    ("nan", "1 of its vectors are not unit length (entry 3: norm nan)"),
    ("scaled", "24 of its vectors are not unit length (entry 0: norm 100)"),
])
def test_damaged_index_files_are_refused_naming_the_part(crafted, name, message):
    with pytest.raises(IndexFileError) as info:
        Index.load(crafted[name])
    assert message in str(info.value) and str(crafted[name]) in str(info.value)


# --- The weak cases, through the CLI ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def retrieval_cli(runs, crafted):
    """Every retrieval, shard, check-data and init case in one process; results by name."""
    run = runs / "retrieval" / "run"
    data = runs / "retrieval"
    bad = runs / "bad"
    bad.mkdir()
    # Shard folders: a missing shard, a truncated one, an index naming a file outside the folder.
    missing = _pack(runs, "missing", shard_rows=8)
    (missing / "shard-00001.tfrecord").unlink()
    truncated = _pack(runs, "truncated", shard_rows=8)
    shard = truncated / "shard-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:3000])
    escaping = _pack(runs, "escaping")
    index = json.loads((escaping / "index.json").read_text())
    index["shards"][0]["file"] = "../../../../etc/passwd"
    (escaping / "index.json").write_text(json.dumps(index))
    leftovers = runs / "packs" / "leftovers"
    leftovers.mkdir()
    for name in ("shard-00003.tfrecord", ".shard-00004.tfrecord.tmp", ".index.json.tmp"):
        (leftovers / name).write_bytes(b"from a killed pack")
    (leftovers / "notes.txt").write_text("the user's")
    # Manifests: one row; one 10 MB line; a symlink out of the data folder; cells with escape codes.
    rows = make_files(bad, n=4)
    write_csv(bad / "one_row.csv", rows[:1])
    (bad / "one_line.csv").write_text("x" * 10_000_000)
    (runs / "outside.png").write_bytes((bad / "img" / "0.png").read_bytes())  # outside the manifest's folder
    os.symlink(runs / "outside.png", bad / "img" / "linked.png")
    write_csv(bad / "linked.csv", [dict(rows[0], img="img/linked.png"), *rows[1:]])
    shutil.copy(bad / "img" / "0.png", bad / "img" / "\x1b[2Jx.png")
    write_csv(bad / "escapes.csv", [dict(rows[0], img="img/\x1b[2Jx.png"), *rows[1:]])
    (bad / "a_folder").mkdir()
    healthy = _pack(runs, "healthy")
    cases = {
        "healthy_shards": ["check-data", "--data", healthy, "--model", run, "--quiet"],
        "k_negative": ["search", "--index", runs / "catalogue.index", "--feature", "tabular=30,paris", "--k", "-3"],
        "k0": ["search", "--index", runs / "catalogue.index", "--feature", "tabular=30,paris", "--k", "0"],
        "out_folder": ["index", "--model", run, "--data", data / "val.csv", "--out", bad / "a_folder"],
        "out_missing_folder": ["index", "--model", run, "--data", data / "val.csv", "--out",
                               bad / "new" / "sub" / "c.index", "--quiet"],
        "nan_cell": ["search", "--index", runs / "catalogue.index", "--feature", "tabular=nan,paris"],
        "huge_cell": ["search", "--index", runs / "catalogue.index", "--feature", "tabular=1e308,paris"],
        "escapes_index": ["index", "--model", run, "--data", bad / "escapes.csv", "--out", bad / "esc.index",
                          "--quiet"],
        "escapes_search": ["search", "--index", bad / "esc.index", "--feature", "tabular=30,paris", "--k", "4"],
        "missing_shard": ["check-data", "--data", missing, "--model", run, "--quiet"],
        "truncated_shard": ["check-data", "--data", truncated, "--model", run, "--quiet"],
        "escaping_shard": ["check-data", "--data", escaping, "--model", run, "--quiet"],
        "symlink": ["check-data", "--data", bad / "linked.csv", "--model", run, "--quiet"],
        "leftovers": ["pack", "--data", data / "val.csv", "--out", leftovers, "--quiet"],
        "init_one_line": ["init", "--data", bad / "one_line.csv", "--out", bad / "one_line.yaml"],
        "init_one_row": ["init", "--data", bad / "one_row.csv", "--out", bad / "one_row.yaml"],
        **{f"index_{name}": ["search", "--index", path, "--feature", "tabular=30,paris"]
           for name, path in crafted.items()},
    }
    return batch(cases, cwd=runs), runs


def test_search_and_index_options_and_query_cells(retrieval_cli):
    results, runs = retrieval_cli
    assert_user_error(results["k0"], "argument --k: must be a whole number >= 1. Received: 0")
    assert_user_error(results["out_folder"], "is a folder; an index is one file")
    assert results["out_missing_folder"]["code"] == 0, results["out_missing_folder"]
    assert "softmax" not in results["out_missing_folder"]["stderr"]  # a one-feature tower's gate: no Keras warning
    assert (runs / "bad" / "new" / "sub" / "c.index").is_file()
    assert_user_error(results["nan_cell"], "the query: tabular column 'age': a cell is not a number")
    assert_user_error(results["huge_cell"], "the query: tabular column 'age': a cell is not a finite float32 number")


def test_damaged_index_files_through_search(retrieval_cli):
    results, _ = retrieval_cli
    assert_user_error(results["index_nokey"], "nokey.index: corrupt index file: meta.json lacks dim")
    assert_user_error(results["index_rowstrings"], "rows.json's entry 0 is str")
    assert_user_error(results["index_scaled"], "not unit length (entry 0: norm 100)")


def test_cells_reach_the_terminal_escaped(retrieval_cli):
    results, _ = retrieval_cli
    assert results["escapes_index"]["code"] == 0, results["escapes_index"]
    out = results["escapes_search"]
    assert out["code"] == 0 and "img=img/\\x1b[2Jx.png" in out["stdout"] and "\x1b" not in out["stdout"]


def test_shard_folders_missing_truncated_or_escaping(retrieval_cli):
    results, runs = retrieval_cli
    missing = results["missing_shard"]
    assert missing["code"] == 1 and "16 of 24 rows usable, 1 problem(s)" in missing["stdout"] + missing["stderr"]
    assert "shard-00001.tfrecord: missing (index.json lists it with 8 rows)" in missing["stderr"]
    truncated = results["truncated_shard"]
    assert truncated["code"] == 1 and "shard-00001.tfrecord: truncated or damaged" in truncated["stderr"]
    assert_user_error(results["escaping_shard"], "shard 1 is named '../../../../etc/passwd'",
                      "a path that leaves the folder is refused")
    assert results["leftovers"]["code"] == 0, results["leftovers"]
    assert sorted(os.listdir(runs / "packs" / "leftovers")) == ["index.json", "notes.txt", "shard-00000.tfrecord"]


def test_a_symlink_out_of_the_data_folder_is_refused(retrieval_cli):
    results, _ = retrieval_cli
    out = results["symlink"]
    assert out["code"] == 1 and "row 1, column 'img' (img/linked.png): path resolves to " in out["stderr"]
    assert "outside.png, outside the data root" in out["stderr"]


def test_init_on_a_one_line_or_one_row_manifest(retrieval_cli):
    results, _ = retrieval_cli
    assert_user_error(results["init_one_line"], "one_line.csv line 1: not a CSV manifest (field larger than field limit")
    assert_user_error(results["init_one_row"], "the label column 'label' holds one value ('red') in its 1 row(s)")


# --- Transcription ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def transcribe_cli(runs):
    speech = runs / "speech"
    bad = speech / "bad"
    bad.mkdir()
    clips = {"8bit": write_pcm_wav(bad / "8bit.wav", 1, seconds=0.5),
             "24bit": write_pcm_wav(bad / "24bit.wav", 3, seconds=0.5),
             "1hz": write_pcm_wav(bad / "1hz.wav", 2, seconds=3, rate=1),
             "long": write_pcm_wav(bad / "long.wav", 2, seconds=2),
             "empty": write_pcm_wav(bad / "empty.wav", 2, seconds=0)}
    (bad / "garbage.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVE" + bytes(range(128, 256)) * 4)
    clips["garbage"] = str(bad / "garbage.wav")
    shutil.copy(runs / "retrieval" / "img" / "0.png", bad / "image.png")
    clips["png"] = str(bad / "image.png")
    good = speech / "wav" / "0.wav"
    run, tflite = speech / "run", speech / "tflite"
    cases = {name: ["transcribe", "--model", run, "--audio", clip] for name, clip in clips.items()}
    cases.update({
        "tflite_8bit": ["transcribe", "--model", tflite, "--audio", clips["8bit"]],
        "beam0": ["transcribe", "--model", run, "--audio", good, "--beam", "0"],
        "empty_candidate": ["transcribe", "--model", run, "--audio", good, "--candidates", ""],
        "unknown_candidates": ["transcribe", "--model", run, "--audio", good, "--candidates", "xyz", "qqq"],
        "too_long_candidate": ["transcribe", "--model", run, "--audio", good, "--candidates", "do re " * 20, "mi"],
        "tflite": ["transcribe", "--model", tflite, "--audio", good],
        "tflite_file": ["transcribe", "--model", tflite / "model.tflite", "--audio", good, "--beam", "4"],
        "keras": ["transcribe", "--model", run, "--audio", good],
        "predict_tflite": ["predict", "--model", tflite, "--audio", good],
    })
    return batch(cases, cwd=speech)


@pytest.mark.parametrize("name, message", [
    ("8bit", "8bit.wav: a 8-bit WAV file (format tag 1, 1 = PCM, 3 = float): only 16-bit PCM WAV is read"),
    ("24bit", "24bit.wav: a 24-bit WAV file"),
    ("1hz", "1hz.wav: audio of 3 s is longer than audio_length=4000 samples (0.5 s)"),
    ("long", "long.wav: audio of 2 s is longer than audio_length=4000 samples (0.5 s)"),
    ("empty", "empty.wav: the WAV file holds no samples"),
    ("garbage", "garbage.wav: a damaged WAV file (its fmt or data chunk is missing or cut short)"),
    ("png", "image.png: input audio must hold WAV file bytes"),
    ("tflite_8bit", "8bit.wav: a 8-bit WAV file"),
    ("beam0", "argument --beam: must be a whole number >= 1. Received: 0"),
    ("empty_candidate", "candidate 1 is '': each candidate must be a non-empty text"),
    ("unknown_candidates", "none of the 2 candidate(s) can be aligned with the clip"),
])
def test_transcribe_refuses_clips_and_options_in_one_line(transcribe_cli, name, message):
    assert_user_error(transcribe_cli[name], message)


def test_transcribe_names_candidates_it_cannot_choose(transcribe_cli):
    unknown = transcribe_cli["unknown_candidates"]["stderr"]
    assert "candidate 'xyz' has no character the model knows" in unknown and "'qqq'" in unknown
    long = transcribe_cli["too_long_candidate"]
    assert long["code"] == 0 and "needs 119 frames and the clip has 26" in long["stderr"]
    assert long["stdout"].strip() == "mi"


def test_transcribe_and_predict_agree_on_a_tflite_export(transcribe_cli):
    keras_text = transcribe_cli["keras"]["stdout"]
    for name in ("tflite", "tflite_file"):
        assert transcribe_cli[name]["code"] == 0, transcribe_cli[name]
    assert transcribe_cli["tflite"]["stdout"] == keras_text  # float TFLite: the same greedy transcript
    assert_user_error(transcribe_cli["predict_tflite"], "is a transcription model",
                      "use mbm-keras transcribe --model")


def test_transcribe_python_api_refuses_empty_candidates_and_beam_zero(runs):
    from mbm_keras.deploy.transcribing import transcribe
    from mbm_keras.transcription import Vocabulary, decode

    clip = runs / "speech" / "wav" / "0.wav"
    with pytest.raises(ValueError, match="candidates is empty"):
        transcribe(str(runs / "speech" / "run"), str(clip), candidates=[])
    with pytest.raises(ValueError, match="beam must be a positive int"):
        decode(np.zeros((1, 4, 3), np.float32), Vocabulary(["a"]), beam=0)


# --- The notebook without Graphviz --------------------------------------------------------------------------------

def test_notebook_01_draws_no_graph_without_graphviz_and_says_so(monkeypatch, capsys):
    import keras
    import nbformat

    nb = nbformat.read(HERE.parent / "notebooks" / "01_quickstart.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "plot_model" in c.source)
    monkeypatch.setenv("PATH", "/nonexistent")  # no `dot`
    inputs = keras.Input((3,))
    exec(cell, {"keras": keras, "os": os, "model": keras.Model(inputs, keras.layers.Dense(2)(inputs))})
    out = capsys.readouterr().out
    assert "Graphviz's `dot` program is not installed" in out and "Total params" in out


# --- A failed command ends its process ----------------------------------------------------------------------------

EXIT_SCRIPT = """
import sys, threading, time
threading.Thread(target=time.sleep, args=(3600,)).start()  # a thread that would keep the interpreter alive
from mbm_keras.cli import run
sys.argv = ["mbm-keras", "search", "--index", "missing.index", "--feature", "text=x"]
run()
"""


def test_a_failed_command_exits_though_a_thread_still_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 2 and "mbm-keras search: error: Index not found: missing.index" in proc.stderr


@pytest.mark.slow  # trains until the bad row (about 15 s)
def test_train_on_an_8_bit_wav_names_the_row_and_exits(tmp_path):
    path = run_config(tmp_path, data__columns={"image": "img", "text": "caption", "audio": "wav", "label": "label"},
                      model__audio="logmel_cnn",
                      data__preprocessing={"image_size": [16, 16], "text_length": 6, "sample_rate": 8000,
                                           "audio_length": 800})
    write_pcm_wav(tmp_path / "wav" / "5.wav", 1, seconds=0.1)
    proc = subprocess.run([sys.executable, "-m", "mbm_keras.cli", "train", "--config", str(path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "train.csv row 6, column 'wav'" in proc.stderr and "a 8-bit WAV file" in proc.stderr


def test_an_index_from_before_a_setting_existed_still_loads(runs, tmp_path):
    parts = _index_parts(runs / "catalogue.index")
    meta = json.loads(parts["meta.json"])
    old = {k: v for k, v in meta["settings"].items() if k != "rerank"}  # written before kind "pq" existed
    path = _write_index(tmp_path / "old.index", {**parts, "meta.json": json.dumps({**meta, "settings": old})})
    assert Index.load(path).settings["rerank"] == 48
    path = _write_index(tmp_path / "odd.index", {**parts, "meta.json": json.dumps(
        {**meta, "settings": {**old, "depth": 3}})})
    with pytest.raises(IndexFileError, match="meta.json's settings are"):
        Index.load(path)
