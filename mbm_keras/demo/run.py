"""`mbm-keras demo`: train a fusion model and single-modality baselines on the
built-in dataset, compare them, export the fusion model and check the export."""

import json
import os
import time

from mbm_keras.demo.data import CLASS_NAMES, DEMO_SPEC, write_demo_dataset

FUSION_ENCODERS = {"image": "small_cnn", "text": "cnn", "audio": "logmel_cnn"}
REQUIRED_MARGIN = 0.05


def default_data_dir(seed=0):
    """Where the demo dataset goes: `$MBM_KERAS_CACHE` or `~/.cache/mbm_keras/`,
    in a folder named after the dataset version and seed.

    Args:
        seed: the dataset's seed.

    Examples:
        >>> manifest = write_demo_dataset(default_data_dir(seed=0))
    """
    root = os.environ.get("MBM_KERAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mbm_keras")
    return os.path.join(root, f"demo-v{DEMO_SPEC['version']}-seed{seed}")


def _numpy_batch(ds):
    x, _ = next(iter(ds))
    return {k: v.numpy() for k, v in x.items()}


def _select(ds, modalities):
    """The dataset's batches with only the inputs of `modalities`."""
    keep = tuple(modalities)
    return ds.map(lambda x, y: ({k: x[k] for k in keep}, y))


def run_demo(out="saved_models/demo", data_dir=None, seed=0, epochs=12, batch_size=32, verbose=1):
    """Runs the demo end to end and returns its results as a dict.

    1. writes the built-in dataset (PNG, WAV, CSV) into `data_dir` (default:
       `~/.cache/mbm_keras/`, or `$MBM_KERAS_CACHE`), if not there yet;
    2. trains an image + text + audio fusion model and one model per modality;
    3. compares their test accuracy (fusion must beat the best single
       modality by 5 points);
    4. exports the fusion model to `out` (`model.keras`, `saved_model/`,
       `labels.json`, `preprocessor.json` + `vocabulary.txt`, `metrics.json`),
       reloads both model
       files and checks that their predictions match.

    Args:
        out: export folder, replaced atomically.
        data_dir: where the dataset files go.
        seed: seed of the dataset and of the training runs.
        epochs: training epochs for each model.
        batch_size: batch size.
        verbose: 0 silent, 1 progress bars, 2 one line per epoch.

    Returns:
        dict with `accuracy` per model, `margin`, `passed`, `export_diffs`, `out`.

    Examples:
        >>> results = run_demo(out="/tmp/demo_export")
    """
    def say(msg):
        if verbose:
            print(msg, flush=True)

    start = time.time()
    pre, train, val, test = _demo_data(data_dir or default_data_dir(seed), seed, batch_size, verbose, say)
    runs = {"fusion (image+text+audio)": FUSION_ENCODERS}
    runs.update({f"{m} only": {m: enc} for m, enc in FUSION_ENCODERS.items()})
    trained = {label: _train_one(label, i, len(runs), encoders, pre, train, val, test, seed, epochs, verbose, say)
               for i, (label, encoders) in enumerate(runs.items())}
    accuracy = {k: t["accuracy"] for k, t in trained.items()}
    fusion_label = next(iter(runs))
    best_single = max((k for k in accuracy if k != fusion_label), key=accuracy.get)
    margin = accuracy[fusion_label] - accuracy[best_single]
    passed = margin >= REQUIRED_MARGIN
    say("[3/4] Test accuracy (chance = 1/8 = 12.5%)")
    say(f"      {'model':<28}{'accuracy':>10}{'params':>10}{'train s':>9}")
    for k, t in trained.items():
        say(f"      {k:<28}{t['accuracy']:>9.1%}{t['params']:>10,}{t['seconds']:>9.1f}")
    say(
        f"      fusion - best single ({best_single}) = {margin * 100:+.1f} points "
        f"({'OK' if passed else 'FAILED'}: needs >= {REQUIRED_MARGIN * 100:.0f})"
    )
    results = {
        "accuracy": accuracy,
        "params": {k: t["params"] for k, t in trained.items()},
        "train_seconds": {k: t["seconds"] for k, t in trained.items()},
        "best_single": best_single,
        "margin": margin,
        "passed": passed,
        "out": os.path.abspath(out),
    }
    say(f"[4/4] Exporting the fusion model to {os.path.abspath(out)}")
    _export(trained[fusion_label]["model"], pre, test, out, results, start)
    for name, diff in results["export_diffs"].items():
        say(f"      {name:<12} reloaded, max |diff| vs Keras = {diff:.2e}")
    say(f"Done in {results['seconds']:.0f} s.")
    return results


def _demo_data(data_dir, seed, batch_size, verbose, say):
    """The demo dataset written (once) and split; the preprocessor fitted on its training rows; the three datasets."""
    from mbm_keras.data import fit_preprocessor, make_dataset, read_manifest

    say(f"[1/4] Demo dataset: {data_dir}")
    manifest = read_manifest(write_demo_dataset(data_dir, seed=seed))
    split = {
        s: manifest.subset([i for i, r in enumerate(manifest.rows) if r["split"] == s]) for s in ("train", "val", "test")
    }
    say(
        f"      {len(manifest)} examples (PNG + WAV + text), {len(CLASS_NAMES)} classes; "
        f"train {len(split['train'])} / val {len(split['val'])} / test {len(split['test'])}"
    )
    pre = fit_preprocessor(
        split["train"],
        {"image": "image", "text": "text", "audio": "audio", "label": "label"},
        image_size=DEMO_SPEC["image_shape"][:2],
        text_length=DEMO_SPEC["text_length"],
        max_tokens=200,
        sample_rate=DEMO_SPEC["sample_rate"],
        audio_length=DEMO_SPEC["audio_length"],
    )
    data = dict(preprocessor=pre, batch_size=batch_size, seed=seed, cache="memory", verbose=bool(verbose))
    return pre, make_dataset(split["train"], training=True, **data), make_dataset(split["val"], **data), \
        make_dataset(split["test"], **data)


def _train_one(label, i, count, encoders, pre, train, val, test, seed, epochs, verbose, say):
    """One model of the comparison, trained from the seed; its test accuracy, size and training time."""
    import keras

    from mbm_keras import build_fusion_model

    say(f"[2/4] Training {label} ({i + 1}/{count}), {epochs} epochs")
    keras.utils.set_random_seed(seed)
    model = build_fusion_model(**encoders, **pre.model_kwargs(), fusion="concat", fusion_kwargs={"units": 64},
                               dropout=0.2)
    t = time.time()
    model.fit(
        _select(train, encoders),
        validation_data=_select(val, encoders),
        epochs=epochs,
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=verbose,
    )
    seconds = time.time() - t
    _, acc = model.evaluate(_select(test, encoders), verbose=0)
    return {"accuracy": float(acc), "params": model.count_params(), "seconds": seconds, "model": model}


def _export(model, pre, test, out, results, start):
    """The fusion model's run folder and raw-input SavedModel in `out`, both reloaded and checked against Keras
    (`results["export_diffs"]`), and `metrics.json`."""
    from mbm_keras.deploy import export_serving_model
    from mbm_keras.deploy.parity import check_parity
    from mbm_keras.io import atomic_output_dir
    from mbm_keras.run import Run

    sample = _numpy_batch(test)
    with atomic_output_dir(out) as tmp:
        run = Run(tmp)
        run.save(model, pre)  # model.keras, preprocessor.json + vocabulary.txt, labels.json
        export_serving_model(model, pre, run.file("saved_model"))  # raw inputs in
        parity = check_parity(model, sample, {"model.keras": ("keras", run.model_file),
                                              "saved_model": ("saved_model", run.file("saved_model"))}, atol=1e-5)
        results["export_diffs"] = {k: r["max_abs_diff"] for k, r in parity.items()}
        results["seconds"] = time.time() - start
        with open(os.path.join(tmp, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
