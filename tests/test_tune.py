"""`mbm-keras tune`: the `search:` section checked by the config's own schema, trials as run folders scored on
validation, best.yaml that `train` takes as it is, --max-time, and a search killed with SIGKILL resuming."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from test_training import run_config

from mbm_keras.errors import ConfigError
from mbm_keras.tuning import parse_search


def _config(root, search, **overrides):
    config = json.loads(run_config(root, **{"train__epochs": 1, **overrides}).read_text())
    config["search"] = search
    path = root / "tune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("search,message", [
    ({"model.fusoin": ["concat"]}, "search.model.fusoin: not a config key"),
    ({"fusion": ["concat"]}, "search.fusion: not a config key; a key is section.key"),
    ({"model.fusion": ["concat", "glued"]}, "search.model.fusion: 'glued' is not a valid value: model.fusion"),
    ({"train.learning_rate": {"min": 0.1, "max": 0.01}}, "search.train.learning_rate: a range needs numbers min < max"),
    ({"train.learning_rate": {"min": 0, "max": 0.1, "log": True}}, "a log range needs min > 0"),
    ({"model.dropout": {"min": 0.0, "max": 1.5}}, "search.model.dropout: 1.5 is not a valid value: model.dropout"),
    ({"train.epochs": []}, "search.train.epochs: the list of choices is empty"),
    ({"train.epochs": "many"}, "search.train.epochs: must be a list of choices or a range"),
    ({"model.fusion": ["concat", "concat"]}, "the choices repeat a value"),
])
def test_a_bad_search_entry_is_one_line_naming_the_key(tmp_path, search, message):
    path = _config(tmp_path, search)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        parse_search(yaml.safe_load(path.read_text()), source=str(path))
    assert "\n" not in str(e.value)


def test_the_search_space_counts_its_settings_and_maps_them_to_keras_tuner(tmp_path):
    path = _config(tmp_path, {"model.fusion": ["concat", "gated"], "model.fusion_kwargs.units": [8, 16, 32],
                              "train.epochs": {"min": 1, "max": 3}, "data.augment": [False, True]})
    space = parse_search(yaml.safe_load(path.read_text()))
    assert space.size() == 2 * 3 * 3 * 2
    hp = space.hyperparameters()
    assert [p.name for p in hp.space] == ["model.fusion", "model.fusion_kwargs.units", "train.epochs", "data.augment"]
    values = space.values({"model.fusion": "gated", "model.fusion_kwargs.units": 16, "train.epochs": 2,
                           "data.augment": True})
    assert values == {"model.fusion": "gated", "model.fusion_kwargs.units": 16, "train.epochs": 2, "data.augment": True}
    ranged = parse_search({**yaml.safe_load(path.read_text()), "search": {"model.dropout": {"min": 0.0, "max": 0.5}}})
    assert ranged.size() == float("inf")
    # mbm-keras train ignores the section: the config trains as it is.
    from mbm_keras.training.config import load_config

    assert load_config(str(path))["search"]["model.fusion"] == ["concat", "gated"]


def test_the_best_trial_replaces_the_config_as_written_only_beyond_the_validation_noise():
    from mbm_keras.tuning.tuner import choose, gain_and_margin

    def row(trial, score, metric="accuracy", better="max", rows=500):
        return {"trial": trial, "score": score, "metric": metric, "better": better, "rows": rows}

    # 500 rows at about 0.85: one standard error of the difference, sqrt((p1 (1 - p1) + p2 (1 - p2)) / 500), is 0.023.
    kept, why = choose(row("3", 0.852), row("baseline", 0.842))
    assert kept["trial"] == "baseline" and "within the validation noise (0.0228)" in why
    assert gain_and_margin(row("3", 0.852), row("baseline", 0.842)) == pytest.approx((0.010, 0.0228), abs=1e-4)
    kept, why = choose(row("3", 0.880), row("baseline", 0.842))
    assert kept["trial"] == "3" and "beyond the validation noise (0.0218)" in why
    # A score that is not a share of rows (a CER, lower is better): any gain counts; a loss never.
    assert choose(row("1", 0.20, "cer", "min"), row("baseline", 0.21, "cer", "min"))[0]["trial"] == "1"
    assert choose(row("1", 0.22, "cer", "min"), row("baseline", 0.21, "cer", "min"))[0]["trial"] == "baseline"
    assert choose(row("1", 0.5), None)[0]["trial"] == "1"


def test_a_confirmed_gain_must_exceed_the_larger_of_the_row_noise_and_the_fresh_splits_spread():
    from mbm_keras.tuning.tuner import confirmed_gain

    # Two fresh pairs, each with a row noise of 0.02: the mean's row noise is sqrt(2 * 0.02^2) / 2 = 0.0141.
    assert confirmed_gain([0.03, 0.03], [0.02, 0.02]) == pytest.approx((0.03, 0.02 / 2 ** 0.5))
    # Gains that disagree: their spread (sample deviation / sqrt(2) = 0.05) outweighs the rows' noise.
    mean, noise = confirmed_gain([0.06, -0.04], [0.02, 0.02])
    assert mean == pytest.approx(0.01) and noise == pytest.approx(0.05) and mean < noise
    # Scores without a row noise (a CER): the spread alone; one pair: no spread, so any gain counts.
    assert confirmed_gain([0.01, 0.03], [0.0, 0.0]) == pytest.approx((0.02, 0.01))
    assert confirmed_gain([0.01], [0.0]) == (0.01, 0.0)


def test_fresh_seeds_hold_out_groups_the_search_did_not_validate_on(tmp_path):
    from mbm_keras.data.split import split_manifest
    from mbm_keras.tuning.tuner import fresh_seeds

    path = _config(tmp_path, {"model.fusion": ["concat"]}, data__val=None, data__group="speaker", train__seed=5)
    rows = list(csv.DictReader(open(tmp_path / "train.csv")))
    with open(tmp_path / "train.csv", "w", newline="") as f:  # 24 rows of 4 speakers: one speaker held out
        writer = csv.DictWriter(f, [*rows[0], "speaker"])
        writer.writeheader()
        writer.writerows({**r, "speaker": f"s{i % 4}"} for i, r in enumerate(rows))
    config = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "search"}
    config["data"]["train"] = str(tmp_path / "train.csv")

    def held(seed):
        val = split_manifest(str(tmp_path / "train.csv"), (0.8, 0.2, 0.0), group="speaker", seed=seed)["val"]
        return set(val.column("speaker"))

    seeds = fresh_seeds(config, 3)
    assert len(seeds) == 3 and all(s > 5 for s in seeds)
    assert [len(held(s)) for s in [5, *seeds]] == [1, 1, 1, 1]
    assert len(set.union(*[held(s) for s in [5, *seeds]])) == 4  # each a speaker not validated on before
    assert len(fresh_seeds(config, 5)) == 5  # more than the groups allow: the next seeds fill in
    config["data"]["val"] = str(tmp_path / "val.csv")  # fixed validation rows: the next seeds, for new weights
    assert fresh_seeds(config, 2) == [6, 7]


@pytest.mark.slow  # three small trainings and the best config's
def test_tune_runs_trials_as_run_folders_and_writes_a_best_config_train_takes(tmp_path, capsys):
    from mbm_keras.cli import main
    from mbm_keras.training import train

    path = _config(tmp_path, {"model.fusion": ["concat", "gated"], "train.learning_rate": [0.003, 0.03]},
                   data__val=None, data__val_split=0.5)  # no data.val: the run's own hold-out scores each trial
    assert main(["tune", "--config", str(path), "--trials", "3", "--algorithm", "random", "--confirm", "1"]) == 0
    out, err = capsys.readouterr()
    assert "Kept after 3 trials:" in out
    assert "tune: warning: the search space holds 4 settings; 3 trial(s) explore only part of it" in err
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "trials.csv")))
    confirms = [r for r in rows if "@seed" in r["trial"]]
    rows = [r for r in rows if "@seed" not in r["trial"]]
    assert [r["trial"] for r in rows][-1] == "baseline"  # the config as written, on the same validation rows
    base, rows = rows[-1], rows[:-1]
    top = max(rows, key=lambda r: float(r["accuracy"]))
    if "confirming on 1 other split(s)" in err:  # the best trial beat the baseline: both trained again, seed 2
        from mbm_keras.tuning.tuner import confirmed_gain

        assert [r["trial"] for r in confirms] == [f"{top['trial']}@seed2", "baseline@seed2"]
        pair = [json.loads((run / "confirm" / "seed-2" / t / "tuning.json").read_text())
                for t in (top["trial"], "baseline")]
        assert pair[0]["values"] == {"model.fusion": top["model.fusion"],
                                     "train.learning_rate": float(top["train.learning_rate"]), "train.seed": 2}
        assert json.loads((run / "confirm" / "seed-2" / "baseline" / "split.json").read_text())["seed"] == 2
        (p1, p2), n = (p["score"] for p in pair), pair[0]["rows"]
        assert ("is kept" not in out) == (p1 - p2 > confirmed_gain([p1 - p2], [((p1 * (1 - p1) + p2 * (1 - p2)) / n) ** 0.5])[1])
    else:
        assert confirms == [] and not (run / "confirm").exists()
    assert len(rows) == 3 and len({(r["model.fusion"], r["train.learning_rate"]) for r in rows}) == 3
    for r in rows:  # each trial an ordinary run folder, scored on the default validation split
        folder = run / "trials" / r["trial"]
        summary = json.loads((folder / "summary.json").read_text())
        assert (folder / "model.keras").is_file() and summary["validation"]["source"] == "data.val_split"
        assert float(r["accuracy"]) == pytest.approx(summary["score"], abs=1e-6)
        assert f"tune: trial {r['trial']}: validation accuracy" in err
    assert (run / "trials.png").stat().st_size > 1000
    best = yaml.safe_load((run / "best.yaml").read_text())
    kept = None if "is kept" in out else top  # as the run says (test_choose, test_a_confirmed_gain)
    written = yaml.safe_load(path.read_text())
    assert "search" not in best and best["model"]["fusion"] == (kept["model.fusion"] if kept else written["model"]["fusion"])
    assert best["train"]["learning_rate"] == (float(kept["train.learning_rate"]) if kept else written["train"]["learning_rate"])
    result = train(str(run / "best.yaml"), verbose=0)  # as it is
    assert result["output"] == str(run / "best")
    # Run again: the search is finished; nothing trains, the same best.
    assert main(["tune", "--config", str(path), "--trials", "3", "--algorithm", "random", "--confirm", "1"]) == 0
    assert " started" not in capsys.readouterr().err  # no trial starts (a starting one says "(N started)")
    # --max-time: no new trial starts once it has passed.
    assert main(["tune", "--config", str(path), "--trials", "3", "--algorithm", "random", "--overwrite",
                 "--max-time", "1", "--confirm", "0"]) == 0
    assert "no new trial started" in capsys.readouterr().err
    assert [r["trial"] for r in csv.DictReader(open(run / "trials.csv"))] == ["0", "baseline"]


@pytest.mark.slow  # a search killed with SIGKILL in its second trial, then resumed
def test_a_search_killed_with_sigkill_resumes_where_it_stopped(tmp_path):
    path = _config(tmp_path, {"model.fusion": ["concat", "gated", "attention"]}, train__epochs=2)
    command = [sys.executable, "-m", "mbm_keras.cli", "tune", "--config", str(path), "--trials", "3",
               "--algorithm", "random", "--confirm", "0"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    trials = tmp_path / "run" / "trials"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the second trial has started training
        if (trials / "0" / "tuning.json").is_file() and (trials / "1").is_dir():
            break
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    time.sleep(2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (trials / "1" / "tuning.json").exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "trials.csv")))
    assert sorted(r["trial"] for r in rows) == ["0", "1", "2", "baseline"]  # three trials, none run twice
    assert sorted(r["model.fusion"] for r in rows if r["trial"] != "baseline") == ["attention", "concat", "gated"]
    assert "tune: trial 0 " not in done.stderr  # the finished trial was kept, not run again
    assert "tune: trial 1 " in done.stderr  # the killed one ran again


@pytest.mark.slow  # a chief and two worker processes
def test_a_chief_and_two_workers_share_the_trials(tmp_path):
    import socket

    path = _config(tmp_path, {"model.fusion": ["concat", "gated", "attention", "late"]})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    command = [sys.executable, "-m", "mbm_keras.cli", "tune", "--config", str(path), "--trials", "4",
               "--algorithm", "random", "--confirm", "0"]
    procs = {}
    for role in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": port}
        procs[role] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if role == "chief":
            time.sleep(5)  # the chief listens first
    logs = {role: p.communicate(timeout=600)[0] for role, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), {r: log[-2000:] for r, log in logs.items()}
    ran = {role: {line.split()[2] for line in log.splitlines() if line.startswith("tune: trial ") and " started by " in line}
           for role, log in logs.items() if role != "chief"}
    assert ran["tuner0"] and ran["tuner1"] and not ran["tuner0"] & ran["tuner1"], ran  # both ran trials, none twice
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "trials.csv")) if r["trial"] != "baseline"]
    assert len(rows) == 4 == len(ran["tuner0"] | ran["tuner1"])  # as many trials as one process runs
    assert {r["trial"] for r in rows} == ran["tuner0"] | ran["tuner1"]
    assert "Kept after 4 trials" in logs["chief"] and (tmp_path / "run" / "best.yaml").is_file()


@pytest.mark.slow  # Hyperband's brackets: a handful of one- and three-epoch trainings
def test_hyperband_gives_few_epochs_to_many_trials_and_more_to_the_best(tmp_path):
    from mbm_keras.tuning import tune

    path = _config(tmp_path, {"model.fusion": ["concat", "gated", "attention", "late"],
                              "train.learning_rate": {"min": 1e-3, "max": 3e-2, "log": True}})
    result = tune(str(path), algorithm="hyperband", max_epochs=3, progress=False, confirm=0)
    epochs = [r["epochs"] for r in result["trials"]]
    assert sorted(epochs) == [1, 1, 1, 3, 3, 3], epochs  # max_epochs 3, factor 3: brackets of 3x1 (+1x3) and 2x3
    # Of the three one-epoch trials only the best goes on (to three epochs); the two poorer stop there.
    short = [r for r in result["trials"] if r["epochs"] == 1]
    best_short = max(short, key=lambda r: r["score"])
    continued = [r for r in result["trials"] if r["epochs"] == 3 and any(r["values"] == s["values"] for s in short)]
    assert len(continued) == 1 and any(s["values"] == continued[0]["values"] and s["score"] == best_short["score"]
                                       for s in short), (short, continued)  # (a tie: any of the best)
    for r in result["trials"]:  # each trial trained for Hyperband's epochs
        with open(os.path.join(r["output"], "history.csv")) as f:
            assert len(list(csv.DictReader(f))) == r["epochs"]
    assert yaml.safe_load(open(result["best_config"]))["train"]["epochs"] == (result["best"]["epochs"] or 1)
