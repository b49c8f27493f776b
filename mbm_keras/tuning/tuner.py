"""`tune()`: a run config's `search:` section explored with KerasTuner, each trial an ordinary run folder.

KerasTuner's oracle proposes each trial's settings (random search, Bayesian optimization or Hyperband) and
keeps its state in `RUN/tuner/`; the trial is `train()` of the config with those settings, written to
`RUN/trials/<trial id>/` and scored on validation (`Task.tuning_score`: the kept model's accuracy, MAP, CER,
...; the run's default validation split when the config has no `data.val`). A search killed at any point
starts again where it stopped: finished trials are kept, the one that was running trains again from its run
folder's backup. At the end: `RUN/trials.csv`, `RUN/trials.png` (the score of each trial) and `RUN/best.yaml`,
the best trial's config with its settings filled in, which `mbm-keras train --config` takes as it is.
"""

import csv
import json
import math
import os
import shutil
import sys
import time

import yaml

ALGORITHMS = ("bayesian", "hyperband", "random")


class _OutOfTime(Exception):
    pass


def tune(config, trials=10, algorithm="bayesian", max_time=None, max_epochs=None, overwrite=False, progress=True,
         baseline=True, confirm=2):
    """Searches the `search:` section of a run config.

    Args:
        config: the run config's path (YAML or JSON) with a `search:` section.
        trials: the most trials (random and Bayesian); Hyperband sets its own count from `max_epochs`.
        algorithm: "bayesian", "hyperband" or "random".
        max_time: seconds after which no new trial starts (None: no limit).
        max_epochs: Hyperband's most epochs per trial (default: the config's `train.epochs`).
        overwrite: start afresh, discarding an earlier search in the same run folder (default: resume it).
        progress: a line per trial on stderr.
        baseline: also train the config as written (`trials/baseline/`), on the same validation rows, and keep it
            unless the best trial beats it by more than the validation score's noise (see `choose`).
        confirm: when the best trial does beat it, train both again this many times with other seeds (another
            validation hold-out, other initial weights) and keep the trial only if it still wins on those fresh
            splits beyond their noise (see `confirm_best`); 0 trusts the search's own validation.

    Returns:
        `{"trials": [{"trial", "values", "metric", "score", "seconds", "output"}], "best": the kept row (the
        baseline's, `"trial": "baseline"`, unless a trial beat it beyond the noise), "baseline": its row,
        "best_config": path of best.yaml, "output": the run folder}`.

    Examples:
        >>> tune("configs/tune.yaml", trials=8, algorithm="random")["best"]["score"]
    """
    import keras_tuner

    from mbm_keras.training.config import _read, load_config
    from mbm_keras.tuning.space import parse_search

    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}. Received: {algorithm!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive int. Received: {trials!r}")
    if isinstance(confirm, bool) or not isinstance(confirm, int) or confirm < 0:
        raise ValueError(f"confirm must be an int >= 0. Received: {confirm!r}")
    raw, path = _read(config)
    space = parse_search(raw, source=path)
    resolved = load_config(path)
    written = absolute_paths(raw, resolved)  # the config as written, once: every trial starts from it
    out = resolved["output"]
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None)
    size = space.size()
    if algorithm != "hyperband" and size > trials:
        say(f"tune: warning: the search space holds {'continuous ranges' if size == math.inf else f'{size} settings'}"
            f"; {trials} trial(s) explore only part of it (raise --trials or narrow search:)")
    oracle = _oracle(algorithm, space, trials, max_epochs or resolved["train"]["epochs"])
    role = _role(say)
    if overwrite and role != "worker":
        _discard(out, say)
    try:
        searcher = _Search(written, space, say, max_time, oracle=oracle, directory=out, project_name="tuner",
                           overwrite=overwrite)
    except RuntimeError as e:  # KerasTuner cannot reload the saved search into this one
        raise ValueError(f"{os.path.join(out, 'tuner')} holds a search that does not match this one (another "
                         f"search: section or algorithm?): run with --overwrite to discard it, or set another "
                         f"output ({str(e).splitlines()[0]})") from None
    try:
        searcher.search(verbose=0)  # our own line per trial, not KerasTuner's
    except _OutOfTime:
        say(f"tune: --max-time {max_time} s reached: no new trial started")
    except keras_tuner.errors.FatalError as e:
        cause = e.__cause__
        raise (type(cause) if isinstance(cause, ValueError) else ValueError)(str(e)) from None
    if role == "worker":  # the chief gathers the trials, its table and best.yaml
        say(f"tune: worker {os.environ['KERASTUNER_TUNER_ID']}: the chief has no more trials to give; done")
        return {"trials": [], "best": None, "best_config": None, "output": out}
    return _finish(searcher, out, written, path, space, say, baseline, confirm)


def _oracle(algorithm, space, trials, max_epochs):
    import keras_tuner

    # The oracle maximizes: a score that is better lower (a CER, a loss) is handed to it negated.
    objective = keras_tuner.Objective("score", "max")
    hp = space.hyperparameters()
    if algorithm == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective, max_trials=trials, hyperparameters=hp, seed=0)
    if algorithm == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(objective, max_trials=trials, hyperparameters=hp,
                                                               seed=0)
    return keras_tuner.oracles.HyperbandOracle(objective, max_epochs=max_epochs, hyperparameters=hp, seed=0)


def _discard(out, say):
    for name in ("trials", "tuner", "confirm"):
        if os.path.isdir(os.path.join(out, name)):
            say(f"tune: --overwrite: discarding the earlier search's {os.path.join(out, name)}")
            shutil.rmtree(os.path.join(out, name))


def _role(say):
    """None (one process), "chief" or "worker": KerasTuner's distributed mode, set by its environment variables
    (KERASTUNER_TUNER_ID: "chief" or a worker's name; KERASTUNER_ORACLE_IP and _PORT: where the chief listens)."""
    from keras_tuner.src.distribute import utils

    if not utils.has_chief_oracle():
        return None
    where = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    if utils.is_chief_oracle():
        say(f"tune: chief: the oracle listens on {where}; the workers run the trials")
        return "chief"
    say(f"tune: worker {os.environ['KERASTUNER_TUNER_ID']}: asking the chief at {where} for trials")
    return "worker"


class _Search:
    """A KerasTuner tuner whose trial is a `train()` of the config (built lazily: keras_tuner imports late)."""

    def __new__(cls, written, space, say, max_time, **kwargs):
        import keras_tuner

        class Search(keras_tuner.engine.base_tuner.BaseTuner):
            def __init__(self):
                super().__init__(**kwargs)
                self.deadline = None if max_time is None else time.time() + max_time
                self.written, self.space, self.say = written, space, say
                self.started = 0
                worker = os.environ.get("KERASTUNER_TUNER_ID", "")
                self.by = f" by {worker}" if worker and worker != "chief" else ""

            def pre_create_trial(self):
                if self.deadline is not None and time.time() > self.deadline:
                    raise _OutOfTime()

            def run_trial(self, trial, *args, **kwargs):
                from mbm_keras.errors import ConfigError
                from mbm_keras.training.run_folder import RunFolderError

                try:
                    return _run_trial(self, trial)
                except (ConfigError, RunFolderError, ValueError, FileNotFoundError) as e:
                    # What every trial would meet again (a missing file, no validation): stop the search, in one
                    # line, rather than KerasTuner's three retries with tracebacks.
                    raise keras_tuner.errors.FatalError(f"trial {trial.trial_id}: {e}") from e

            def save_model(self, trial_id, model, step=0):
                pass

            def load_model(self, trial):
                raise NotImplementedError("each trial is a run folder: RUN/trials/<trial id>/")

        return Search()


def absolute_paths(raw, resolved):
    """The raw config (as written, `search` dropped) with the paths `load_config` resolved (`resolved`)
    relative to the config file made absolute, so that it trains from anywhere."""
    config = {k: v for k, v in raw.items() if k != "search"}
    for section, keys in config.items():
        if isinstance(keys, dict):
            for key, value in keys.items():
                if isinstance(value, str) and resolved[section].get(key) != value:
                    config[section] = {**config[section], key: resolved[section][key]}
    return config


def trial_config(written, values, output, epochs=None):
    """The run config of one trial: the config as written (`absolute_paths`) with `values` set."""
    from mbm_keras.tuning.space import with_value

    config = dict(written)  # a copy: `written` serves every trial
    for key, value in values.items():
        config = with_value(config, key, value)
    config["output"] = output
    if epochs is not None:
        config = with_value(config, "train.epochs", int(epochs))
    return config


def _run_trial(tuner, trial):
    values = tuner.space.values(trial.hyperparameters.values)
    epochs = trial.hyperparameters.values.get("tuner/epochs")
    out = os.path.abspath(os.path.join(tuner.project_dir, "..", "trials", trial.trial_id))
    saved = run_config_once(tuner.written, values, out, epochs, tuner.say,
                            f"trial {trial.trial_id}", lambda: f"({_started(tuner)} started{tuner.by})")
    return {"score": saved["score"] if saved["better"] == "max" else -saved["score"]}


def _started(tuner):
    tuner.started += 1
    return tuner.started


def run_config_once(written, values, out, epochs, say, name, started=lambda: ""):
    """Trains the config with `values` into `out` and scores it, once: `out/tuning.json` (its values, epochs,
    metric, score, time), read back when there (a trial scored before its search was killed); a finished run
    not yet scored is scored, a killed one resumes from its backup."""
    from mbm_keras.training import train

    record = os.path.join(out, "tuning.json")
    if os.path.isfile(record):
        saved = _read_json(record)
        say(f"tune: {name}: scored before: {saved['metric']} {saved['score']:.4f}")
        return saved
    config = trial_config(written, values, out, epochs)
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "the config as written"
    say(f"tune: {f'{name} {started()}'.strip()}: {shown}{f', epochs={epochs}' if epochs else ''}")
    start = time.time()
    if os.path.isfile(os.path.join(out, "summary.json")) and os.path.isfile(os.path.join(out, "model.keras")):
        result = {"output": out, "summary": _read_json(os.path.join(out, "summary.json"))}  # trained, not scored
    else:
        result = train(config, verbose=0)  # a killed trial's run folder resumes from its backup
    metric, score, better = _score(result, result.get("summary") or {})
    saved = {"values": values, "epochs": epochs, "metric": metric, "score": score, "better": better,
             "seconds": time.time() - start, "rows": _validation_rows(result.get("summary") or {}, config)}
    with open(record, "w") as f:
        json.dump(saved, f, indent=1)
    say(f"tune: {name}: validation {metric} {score:.4f} ({saved['seconds']:.0f} s)")
    return saved


def _validation_rows(summary, config):
    rows = (summary.get("validation") or {}).get("rows") or {}
    if rows.get("val"):
        return int(rows["val"])
    if config["data"].get("val"):
        from mbm_keras.data import read_manifest

        try:
            return len(read_manifest(config["data"]["val"]))
        except (OSError, ValueError):
            return None
    return None


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _score(result, summary):
    from mbm_keras.tasks import load_run

    _, _, task = load_run(result["output"])
    try:
        return task.tuning_score(summary)
    except ValueError as e:
        raise ValueError(f"tune scores each trial on validation, and {result['output']} has none: {e}") from None


def gain_and_margin(best, baseline):
    """`(gain, margin)`: how far `best` is above `baseline` (the score's direction: positive is better) and the
    validation score's noise. The noise, for a score that is a share of the validation rows (accuracy): one
    standard error of the difference of two such shares, sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n); for other scores
    no estimate from one split: 0, so any gain counts (`confirm_best` then estimates it from the fresh splits'
    spread)."""
    gain = (best["score"] - baseline["score"]) * (1 if best["better"] == "max" else -1)
    n = best.get("rows") or baseline.get("rows")
    margin = 0.0
    if best["metric"] == "accuracy" and n:
        margin = math.sqrt(sum(p * (1 - p) for p in (best["score"], baseline["score"])) / n)
    return gain, margin


def choose(best, baseline):
    """`(kept row, why)`: the best trial when it beats the baseline (the config as written) by more than the
    validation score's noise (`gain_and_margin`), else the baseline."""
    if baseline is None:
        return best, "no baseline"
    gain, margin = gain_and_margin(best, baseline)
    if gain > margin:
        return best, (f"trial {best['trial']} beats the config as written by {gain:+.4f} {best['metric']}, beyond the "
                      f"validation noise ({margin:.4f})")
    return baseline, (f"the best trial ({best['trial']}, {gain:+.4f} {best['metric']}) is within the validation "
                      f"noise ({margin:.4f}) of the config as written, which is kept")


def confirm_best(written, best, base, folds, out, say):
    """`(kept row, why, rows trained)`: the best trial and the baseline trained again `folds` times, each time
    with another `train.seed` (so another validation hold-out, other whole groups when `data.group` is set, and
    other initial weights; with `data.val` the same validation rows), into `out/confirm/seed-<s>/`.

    The search's own validation picked the best trial among all trials, so its gain there is biased upward (the
    winner's curse), and with grouped data it measures one draw of held-out groups. The fresh pairs measure the
    gain without either: the trial is kept only if its mean gain over them exceeds the standard error of that
    mean, the larger of the row noise (`gain_and_margin`, per pair) and the pairs' own spread."""
    gains, margins, trained = [], [], []
    for k, seed in enumerate(fresh_seeds(written, folds), 1):
        pair = []
        for row in (best, base):
            values = {**row["values"], "train.seed": seed}
            folder = os.path.join(out, "confirm", f"seed-{seed}", str(row["trial"]))
            saved = run_config_once(written, values, folder, row["epochs"], say,
                                    f"confirm {k}/{folds} ({row['trial']}, seed {seed})")
            pair.append({"trial": f"{row['trial']}@seed{seed}", **saved, "output": folder})
        trained += pair
        gain, margin = gain_and_margin(*pair)
        gains.append(gain)
        margins.append(margin)
    mean, noise = confirmed_gain(gains, margins)
    shown = ", ".join(f"{g:+.4f}" for g in gains)
    if mean > noise:
        why = (f"trial {best['trial']} beats the config as written on {folds} fresh split(s) too (gains {shown}, "
               f"mean {mean:+.4f} {best['metric']}, beyond their noise {noise:.4f})")
        return best, why, trained
    why = (f"the best trial ({best['trial']}) won the search's validation but not {folds} fresh split(s) (gains "
           f"{shown}, mean {mean:+.4f} {best['metric']}, noise {noise:.4f}); the config as written is kept")
    return base, why, trained


def fresh_seeds(written, folds, tries=100):
    """The `folds` seeds after the config's `train.seed` for `confirm_best`. With a grouped hold-out (`data.group`,
    no `data.val`) each one's validation holds a set of groups that neither the config's own seed nor an earlier
    fresh seed held out, as far as the groups allow (then the next seeds in order); otherwise seed + 1, + 2, ..."""
    from mbm_keras.data.manifest import read_manifest
    from mbm_keras.data.shards import is_remote, is_shard_folder
    from mbm_keras.training.config import load_config
    from mbm_keras.training.holdout import split_rows

    data, seed = load_config(written)["data"], int(written.get("train", {}).get("seed", 0) or 0)
    following = list(range(seed + 1, seed + 1 + tries))
    share, group, path = data["val_split"], data["group"], data["train"]
    if data["val"] or not group or not share or is_remote(path) or is_shard_folder(path):
        return following[:folds]
    manifest = read_manifest(path)

    def held(s):  # the groups hold_out's split puts on the validation side with seed s
        val = split_rows(manifest, share, s, group=group)["val"]
        return frozenset(str(v) for v in val.column(group))

    seen, chosen = {held(seed)}, []
    for s in following:
        if len(chosen) == folds:
            break
        groups = held(s)
        if groups not in seen:
            seen.add(groups)
            chosen.append(s)
    return chosen + [s for s in following if s not in chosen][:folds - len(chosen)]


def confirmed_gain(gains, margins):
    """`(mean gain, its standard error)` over fresh pairs: the error is the larger of the row noise (each pair's
    margin, combined: sqrt(sum m^2) / k) and the pairs' spread (their sample deviation / sqrt(k), k > 1)."""
    k = len(gains)
    mean = sum(gains) / k
    spread = sum((g - mean) ** 2 for g in gains) / (k - 1) / k if k > 1 else 0.0
    return mean, math.sqrt(max(sum(m * m for m in margins) / k ** 2, spread))


def _finish(searcher, out, written, path, space, say, baseline=True, confirm=0):
    rows = []
    for trial_id in sorted(searcher.oracle.trials, key=lambda t: (len(t), t)):
        trial = searcher.oracle.trials[trial_id]
        record = os.path.join(out, "trials", trial_id, "tuning.json")
        if trial.status != "COMPLETED" or not os.path.isfile(record):
            continue
        rows.append({"trial": trial_id, **_read_json(record), "output": os.path.join(out, "trials", trial_id)})
    if not rows:
        raise RuntimeError(f"no trial finished in {out}/trials: nothing to choose from")
    best = (max if rows[0]["better"] == "max" else min)(rows, key=lambda r: r["score"])
    base = None
    if baseline:
        folder = os.path.join(out, "trials", "baseline")
        base = {"trial": "baseline", **run_config_once(written, {}, folder, None, say, "baseline"),
                "output": folder}
    kept, why = choose(best, base)
    confirmed = []
    if kept is not base and base is not None and confirm:
        say(f"tune: {why}; confirming on {confirm} other split(s) and seed(s): the trial was picked as the best of "
            f"{len(rows)} on this validation, which flatters it")
        kept, why, confirmed = confirm_best(written, best, base, confirm, out, say)
    _write_table(rows + ([base] if base else []) + confirmed, list(space.entries), os.path.join(out, "trials.csv"))
    _plot(rows, best, os.path.join(out, "trials.png"), base)
    config = trial_config(written, kept["values"], os.path.join(out, "best"), kept["epochs"])
    best_path = os.path.join(out, "best.yaml")
    with open(best_path, "w") as f:
        f.write(f"# Kept after {len(rows)} trials of {path}: {why}.\n# mbm-keras train --config {best_path}\n")
        yaml.safe_dump(config, f, sort_keys=False)
    say(f"tune: {len(rows)} trial(s) in {out}/trials (table: trials.csv, plot: trials.png)")
    for r in rows + ([base] if base else []):
        settings = ", ".join(f"{k}={r['values'][k]!r}" for k in space.entries if k in r["values"])
        say(f"  {'*' if r is kept else ' '} {r['trial']:>8}: {r['metric']} {r['score']:.4f}  {r['seconds']:6.0f} s  "
            f"{settings or 'the config as written'}")
    say(f"tune: kept: {why}")
    return {"trials": rows, "best": kept, "baseline": base, "why": why, "best_config": best_path, "output": out}


def _write_table(rows, keys, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", *keys, "epochs", rows[0]["metric"], "seconds", "output"])
        for r in rows:
            writer.writerow([r["trial"], *[r["values"].get(k, "") for k in keys], r["epochs"] or "",
                             f"{r['score']:.6g}", f"{r['seconds']:.1f}", r["output"]])


def _plot(rows, best, path, baseline=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    scores = [r["score"] for r in rows]
    ax.plot(range(1, len(rows) + 1), scores, "o-", color="#57606a")
    running = [(max if best["better"] == "max" else min)(scores[:i + 1]) for i in range(len(scores))]
    ax.plot(range(1, len(rows) + 1), running, "-", color="#1a7f37", label="best so far")
    if baseline is not None:
        ax.axhline(baseline["score"], color="#cf222e", linestyle="--", label="the config as written")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {best['metric']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
