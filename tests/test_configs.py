"""The command-line path a new user follows: the example configs in configs/, `mbm-keras init`,
and the README's command-line walkthrough run as written."""

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mbm_keras.cli import main
from mbm_keras.demo import write_demo_dataset
from mbm_keras.training import init_config, load_config, train

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of configs/ beside data/demo, as in the repository after `mbm-keras demo --data-only`."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "configs", root / "configs")
    write_demo_dataset(str(root / "data" / "demo"), seed=0)
    return root


def test_configs_exist_for_each_task_and_readme_lists_them():
    names = {p.name for p in CONFIGS}
    assert {"classification.yaml", "tabular.yaml", "retrieval.yaml"} <= names
    readme = (ROOT / "README.md").read_text()
    for path in CONFIGS:
        assert f"(configs/{path.name})" in readme, f"README does not list configs/{path.name}"
        text = path.read_text()
        body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        commented = [line for line in body if "#" in line]
        assert text.startswith("#") and len(commented) >= 0.4 * len(body), f"{path.name} is not commented"
        assert any(f"mbm-keras {command} --config configs/{path.name}" in text
                   for command in ("train", "pretrain", "tune"))


# make test-fast trains the tabular config; make test also the classification and pretraining configs (test-fast
# trains the classification task through the CLI on tiny data: tests/test_training.py). The
# retrieval and transcription configs are trained one epoch, as they are (only the data paths, the epochs and
# the output set), by notebooks 06 and 07 (tests/test_notebooks.py, make test), which then search and transcribe
# with their runs: training them here too would repeat those two trainings. test-fast still schema-checks every
# config (test_the_json_schema_and_the_key_table_come_from_the_config_schema) and trains each task on tiny data.
FAST_CONFIGS = ("tabular",)
TRAINED_BY_NOTEBOOKS = {"retrieval": "06_search_engine", "transcription": "07_transcription"}
# The README's command-line block trains the classification config as written, every epoch
# (test_readme_command_line_runs_as_written): a one-epoch training here would repeat it.
TRAINED_BY_README = ("classification",)


def test_every_config_is_trained_here_or_by_a_tested_notebook():
    stems = {p.stem for p in CONFIGS}
    assert set(TRAINED_BY_NOTEBOOKS) <= stems
    tested = (ROOT / "tests" / "test_notebooks.py").read_text()
    for stem, notebook in TRAINED_BY_NOTEBOOKS.items():
        cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert f'open("../configs/{stem}.yaml")' in code and "MBM_KERAS_NOTEBOOK_EPOCHS" in code, notebook
        assert f'run_notebook("{notebook}"' in tested, f"tests/test_notebooks.py does not run {notebook}"
    block = (ROOT / "README.md").read_text().split("## The command line")[1].split("```")[1]
    for stem in TRAINED_BY_README:  # as written: no --epochs
        assert re.search(rf"^mbm-keras train --config configs/{stem}\.yaml +(#|$)", block, re.M), stem


@pytest.mark.parametrize("path", [pytest.param(p, marks=() if p.stem in FAST_CONFIGS else pytest.mark.slow)
                                  for p in CONFIGS if p.stem not in {*TRAINED_BY_NOTEBOOKS, *TRAINED_BY_README}],
                         ids=lambda p: p.stem)
def test_every_config_trains_one_epoch_as_is(workdir, path):
    config = workdir / "configs" / path.name
    loaded = load_config(str(config))
    assert os.path.isfile(loaded["data"]["train"]) and os.path.isfile(loaded["data"]["val"])
    out = workdir / "runs" / path.stem
    if loaded["search"]:  # a search config: one trial of its search, one epoch (tests/test_tune.py tests the rest)
        from mbm_keras.tuning import tune

        text = config.read_text().replace("epochs: 6 ", "epochs: 1 ")
        assert text != config.read_text()
        config.write_text(text)
        result = tune(str(config), trials=1, algorithm="random", progress=False, baseline=False)
        assert load_config(result["best_config"])["output"] == str(workdir / "runs" / "tune" / "best")
        out = workdir / "runs" / "tune" / "trials" / result["best"]["trial"]
    else:
        train(str(config), epochs=1, output=str(out), verbose=0)
    assert (out / "model.keras").is_file()
    with open(out / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def _guesses(report):
    return {c["column"]: (c["kind"], c["tabular"]) for c in report["columns"]}


def test_init_on_the_demo_manifest_guesses_every_column(workdir, tmp_path, capsys):
    out = tmp_path / "run.yaml"
    assert main(["init", "--data", str(workdir / "data" / "demo" / "train.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "keyword" in printed and "tabular (categorical)" in printed and f"Wrote {out}" in printed
    config = load_config(str(out))
    assert config["data"]["columns"] == {"image": "image", "text": "text", "audio": "audio", "label": "label",
                                         "tabular": {"numeric": ["redness", "pitch_hz"], "categorical": ["keyword"]}}
    assert config["data"]["val"] == str(workdir / "data" / "demo" / "val.csv")  # found beside train.csv
    assert config["data"]["preprocessing"] == {"image_size": [32, 32], "text_length": 8, "sample_rate": 8000,
                                               "audio_length": 2000}  # measured from the files
    assert {config["model"][m] for m in ("image", "text", "audio", "tabular")} == {"small_cnn", "cnn", "logmel_cnn",
                                                                                  "mlp"}
    assert "# split: left out (a split column (train))" in out.read_text()
    # An existing config is never replaced without --overwrite.
    before = out.read_text()
    assert main(["init", "--data", str(workdir / "data" / "demo" / "train.csv"), "--out", str(out)]) == 2
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == before


def test_init_on_a_tabular_csv_writes_a_config_that_trains(tmp_path):
    rng = np.random.default_rng(0)
    with open(tmp_path / "houses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["house_id", "rooms", "area_m2", "city", "target"])
        for i in range(120):
            city = ["paris", "lyon", "nice"][i % 3]
            area = rng.uniform(20, 200)
            writer.writerow([1000 + i, int(rng.integers(1, 8)), f"{area:.1f}", city, "big" if area > 110 else "small"])
    report = init_config(str(tmp_path / "houses.csv"), str(tmp_path / "houses.yaml"))
    assert _guesses(report) == {"house_id": ("left out", None), "rooms": ("tabular", "numeric"),
                                "area_m2": ("tabular", "numeric"), "city": ("tabular", "categorical"),
                                "target": ("label", None)}
    assert report["ambiguous"] == ["rooms"]  # 7 whole values: a number or a category? said, read as a number
    text = (tmp_path / "houses.yaml").read_text()
    assert "# house_id: left out (an identifier" in text and "rooms" in text and "a number or a category" in text
    config = load_config(str(tmp_path / "houses.yaml"))
    assert config["model"]["tabular"] == "mlp" and config["output"] == str(tmp_path / "runs" / "houses")
    result = train(str(tmp_path / "houses.yaml"), epochs=1, verbose=0)
    assert os.path.isfile(os.path.join(result["output"], "model.keras"))


def test_init_on_jsonl_with_an_ambiguous_column(tmp_path):
    rng = np.random.default_rng(1)
    words = "a small quiet old red blue car boat house tree near the river".split()
    with open(tmp_path / "items.jsonl", "w") as f:
        for i in range(60):
            f.write(json.dumps({"description": " ".join(rng.choice(words, 6)), "price": float(rng.uniform(1, 99)),
                                "sku": f"SKU-{rng.integers(10**6)}", "kind": ["toy", "tool"][i % 2],
                                "photo": f"img/{i}.jpg", "sound": f"snd/{i}.xyz"}) + "\n")
    with pytest.raises(ValueError, match=r"no label column .* --label COLUMN \(categories in the manifest: kind\)"):
        init_config(str(tmp_path / "items.jsonl"), str(tmp_path / "items.yaml"))
    assert not (tmp_path / "items.yaml").exists()
    report = init_config(str(tmp_path / "items.jsonl"), str(tmp_path / "items.yaml"), label="kind")
    assert _guesses(report) == {"description": ("text", None), "price": ("tabular", "numeric"),
                                "sku": ("left out", None), "kind": ("label", None), "photo": ("image", None),
                                "sound": ("left out", None)}
    assert report["ambiguous"] == ["sku", "sound"]
    text = (tmp_path / "items.yaml").read_text()
    assert re.search(r"# sku: left out \(ambiguous: 60 distinct short strings", text)
    assert "# sound: left out (ambiguous: .xyz file paths, which no registered modality reads)" in text
    config = load_config(str(tmp_path / "items.yaml"))
    assert config["data"]["columns"] == {"text": "description", "image": "photo", "label": "kind",
                                         "tabular": {"numeric": ["price"]}}
    assert config["data"]["preprocessing"]["image_size"] == [224, 224]  # no image could be read: said in the file
    assert "no image could be read" in text


def test_init_names_two_columns_of_one_modality_as_features(tmp_path):
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["front", "rear", "label"])
        for i in range(30):
            writer.writerow([f"f/{i}.png", f"r/{i}.png", ["a", "b"][i % 2]])
    init_config(str(tmp_path / "pairs.csv"), str(tmp_path / "pairs.yaml"))
    config = load_config(str(tmp_path / "pairs.yaml"))
    assert config["data"]["columns"] == {"front": "front", "rear": "rear", "label": "label"}
    assert config["model"]["features"] == {"front": ["image", "small_cnn"], "rear": ["image", "small_cnn"]}


def test_config_paths_resolve_beside_the_file_and_keep_remote_ones(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "../data/train.csv", "val": "gs://bucket/val-shards",
                                             "columns": {"text": "t", "label": "label"}},
                                    "model": {"text": "cnn"}, "output": "~/runs/x"}))
    config = load_config(str(path))
    assert config["data"]["train"] == str(tmp_path / "data" / "train.csv")  # normalized, no "sub/.."
    assert config["data"]["val"] == "gs://bucket/val-shards"  # was joined onto the folder before
    assert config["output"] == os.path.expanduser("~/runs/x")


@pytest.mark.slow
def test_readme_command_line_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The command line"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0].startswith("mbm-keras demo --data-only") and len(lines) == 7
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    outputs = []
    for line in lines:
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    assert (tmp_path / "runs" / "first" / "model.keras").is_file()
    accuracy = float(re.search(r"^accuracy: ([0-9.]+)", outputs[3], re.M).group(1))
    assert accuracy > 0.5, outputs[3]  # chance 0.125; one modality alone about 0.25
    assert (tmp_path / "runs" / "first" / "eval-test-robustness.png").is_file()
    assert (tmp_path / "saved_models" / "first-tflite-int8" / "model.tflite").is_file()
    top = outputs[5].splitlines()[0].split()
    assert top[0] == "blue-dog-high" and float(top[1]) > 0.3, outputs[5]  # the row's image and clip, a dog text
    assert load_config(str(tmp_path / "my_run.yaml"))["data"]["columns"]["label"] == "label"
    _readme_serve_block_runs(readme, tmp_path, env)
    _readme_explain_line_runs(readme, tmp_path, env)
    # Every file an example in --help reads is one the user now has.
    from mbm_keras.cli import make_parser

    parser = make_parser()
    texts = [parser.format_help()] + [sub.format_help() for sub in parser._subparsers._group_actions[0].choices.values()]
    named = set(re.findall(r"(?:data/demo|configs)/[\w./-]*\w", "\n".join(texts)))
    assert {"configs/classification.yaml", "data/demo/train.csv", "data/demo/images/0001.png"} <= named
    assert [p for p in named if not (tmp_path / p).exists()] == []
    assert not re.search(r"\b(cat|meow|query|f|r|drive)\.(jpg|png|wav|npy)\b", "\n".join(texts))


def _readme_explain_line_runs(readme, folder, env):
    """The README's `mbm-keras explain` line on the run the command line block trained: a page per row."""
    section = readme[readme.index("**Explain an answer**"):]
    (line,) = [line for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines() if line.strip()]
    proc = subprocess.run(["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Explained 3 rows: report/index.html" in proc.stdout, proc.stdout
    summary = json.loads((folder / "report" / "explanation.json").read_text())
    assert [r["row"] for r in summary["rows"]] == [0, 5, 9] and all(r["completeness_error"] <= 0.01 for r in summary["rows"])
    assert all((folder / "report" / f"row-{r}.html").is_file() for r in (0, 5, 9))


def _readme_serve_block_runs(readme, folder, env):
    """The README's `mbm-keras serve` block on the run the command line block trained: the export, the server
    (in the background, as a user's second terminal), then each request (curl, or httpx where curl is missing)."""
    import httpx

    section = readme[readme.index("**Serve it over HTTP**"):]
    lines = [line for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines() if line.strip()]
    assert lines[1].startswith("mbm-keras serve --model saved_models/demo") and len(lines) == 4
    proc = subprocess.run(["bash", "-c", lines[0]], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    server = subprocess.Popen(["bash", "-c", "exec " + lines[1].split("#")[0]], cwd=folder, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(240):
            try:
                if httpx.get("http://127.0.0.1:8500/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                time.sleep(0.5)
        answers = []
        for line in lines[2:]:
            if shutil.which("curl"):
                answers.append(subprocess.run(["bash", "-c", line + " -sS --fail-with-body"], cwd=folder, env=env,
                                              capture_output=True, text=True, timeout=120).stdout)
            else:  # the same request from httpx
                files = {k: (folder / "data" / "demo" / k / f"0001.{ext}").read_bytes()
                         for k, ext in (("images", "png"), ("audio", "wav"))}
                if "-F" in line:
                    answers.append(httpx.post("http://127.0.0.1:8500/predict", timeout=120, data={"text": "a brown terrier"},
                                              files={"image": files["images"], "audio": files["audio"]}).text)
                else:
                    b64 = {k: {"b64": base64.b64encode(v).decode()} for k, v in files.items()}
                    answers.append(httpx.post("http://127.0.0.1:8500/v1/models/demo:predict", timeout=120, json={
                        "instances": [{"image": b64["images"], "audio": b64["audio"], "text": "a brown terrier"}]}).text)
    finally:
        server.terminate()
        server.wait(60)
    upload, rows = json.loads(answers[0]), json.loads(answers[1])
    assert upload["label"] == upload["classes"][0]["class"] and len(upload["classes"]) == 3, upload
    assert len(rows["predictions"]) == 1 and set(rows["predictions"][0]) == {"probabilities", "label", "score",
                                                                               "classes"}, rows


def test_the_json_schema_and_the_key_table_come_from_the_config_schema():
    """configs/run.schema.json and docs/config.md are what the schema declares today (regenerate them with
    `python -m mbm_keras.training.config_schema`), every key has a description, and the schema accepts every
    example config and refuses what load_config refuses."""
    import json

    import jsonschema

    from mbm_keras.training.config_schema import SCHEMA_FILE, TABLE_FILE, config_table, json_schema

    schema = json_schema()
    assert json.loads((ROOT / SCHEMA_FILE).read_text()) == schema, f"{SCHEMA_FILE} is out of date"
    assert (ROOT / TABLE_FILE).read_text() == config_table(), f"{TABLE_FILE} is out of date"
    for section in schema["properties"].values():
        for key, prop in section.get("properties", {}).items():
            assert prop.get("description"), key
    validator = jsonschema.Draft202012Validator(schema)
    for path in CONFIGS:
        assert path.read_text().startswith("# yaml-language-server: $schema=run.schema.json\n"), path.name
        config = yaml.safe_load(path.read_text())
        assert not list(validator.iter_errors(config)), (path.name, [e.message for e in validator.iter_errors(config)])
    good = yaml.safe_load(CONFIGS[0].read_text())
    for bad, where in (({"train": {"epoch": 3}}, "epoch"), ({"train": {"epochs": 0}}, "epochs"),
                       ({"model": {"fusion": "glue"}}, "fusion"), ({"task": {"kind": "search"}}, "kind"),
                       ({"data": {"preprocessing": {"image_sise": [8, 8]}}}, "image_sise")):
        config = {k: ({**v, **bad[k]} if isinstance(v, dict) and k in bad else v) for k, v in good.items()}
        config.update({k: v for k, v in bad.items() if k not in good})
        errors = [e.message + " at " + "/".join(map(str, e.path)) for e in validator.iter_errors(config)]
        assert errors and any(where in e for e in errors), (bad, errors)
