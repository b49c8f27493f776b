"""Does autoencoder pretraining help when labels are few? AV-digits with 10% of
the training labels.

The files and folds are those of `benchmarks/av_digits.py` (spoken digits of
the Free Spoken Digit Dataset paired with degraded MNIST digits; train on four
speakers, test on the fifth). Per fold, 10% of the training rows keep their
label (stratified by digit, seeded); the rest are unlabelled files. One fusion
(small_cnn + logmel_cnn, concat, modality dropout) is trained on the labelled
10% three ways:

- from scratch;
- autoencoder: its encoders first pretrained without labels on every training
  file with `mbm_keras.pretraining.build_autoencoder` (what `mbm-keras
  pretrain` runs: denoised pixels, the log-mel spectrogram of a noisy clip),
  then loaded through `image_kwargs` / `audio_kwargs={"weights": ...}`;
- unimodal supervised: image-only and audio-only models trained on the same
  labelled 10% first, their encoders seeding the fusion (av_digits' recipe).

Target: autoencoder pretraining beats from scratch by at least 3 points
(mean over the folds).

A second table shows the KerasHub text path end to end: a tiny random-weight
BERT preset (saved with `save_to_preset`, loaded by path: no download is
possible here) against the zoo's LSTM, both on the demo data's sentences
(8 classes), tokenized by the preset's own WordPiece tokenizer for BERT and by
the word tokenizer for the LSTM.

Usage:
    python benchmarks/pretraining.py --data ../shared/data            # 5 folds
    python benchmarks/pretraining.py --data ../shared/data --quick    # 1 fold

Writes benchmarks/results/pretraining.md and .json (`--out`).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from av_digits import ENCODERS, SETTINGS, SPEC, add_file_arguments, build_files, fold_manifests  # noqa: E402

LABELLED = 0.10
TARGET = 0.03
WAYS = ("from scratch", "autoencoder", "unimodal supervised")
CONFIG = {"epochs": 30, "pretrain_epochs": 12, "single_epochs": 30, "batch_size": 32, "modality_dropout": 0.3,
          "noise": 0.1, "learning_rate": 1e-3}


def labelled_subset(train_manifest, folder, share, seed):
    """A manifest of `share` of the training rows, stratified by label."""
    from mbm_keras.data import Manifest, read_manifest, write_manifest

    source = read_manifest(train_manifest)
    rows = source.rows
    rng = np.random.default_rng(seed)
    keep = []
    for label in sorted({r["label"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["label"] == label]
        keep += list(rng.choice(idx, max(1, round(share * len(idx))), replace=False))
    subset = [rows[i] for i in sorted(keep)]
    path = os.path.join(folder, os.path.basename(train_manifest).replace(".csv", f"-labelled{int(share * 100)}.csv"))
    return write_manifest(Manifest(train_manifest, subset, list(rows[0])), path, path_columns=["image", "audio"])


def run_fold(table, folder, speaker, settings, config, verbose=True):
    import keras

    from mbm_keras import build_fusion_model
    from mbm_keras.data import fit_preprocessor, make_dataset
    from mbm_keras.pretraining import build_autoencoder

    train_manifest, tests = fold_manifests(table, folder, speaker)
    labelled = labelled_subset(train_manifest, folder, LABELLED, SPEC["seed"])
    pre = fit_preprocessor(train_manifest, {"image": "image", "audio": "audio", "label": "label"}, image_size=(28, 28),
                           sample_rate=SPEC["sample_rate"], audio_length=settings["audio_length"])
    common = dict(preprocessor=pre, batch_size=config["batch_size"], seed=SPEC["seed"], missing_modalities=True,
                  cache="memory", verify="header", verbose=False)
    test = make_dataset(tests["both"], **common)
    audio_kwargs = dict(settings["audio_kwargs"])
    out = {}
    with tempfile.TemporaryDirectory(prefix="pretraining-encoders-") as encoders:
        # Autoencoders on every training file, labels unused.
        t = time.perf_counter()
        keras.utils.set_random_seed(SPEC["seed"])
        autoencoder = build_autoencoder({"image": ("image", ENCODERS["image"]),
                                         "audio": {"modality": "audio", "encoder": ENCODERS["audio"], "kwargs": audio_kwargs}},
                                        pre.model_kwargs(), noise=config["noise"], seed=SPEC["seed"],
                                        learning_rate=config["learning_rate"])
        unlabelled = make_dataset(train_manifest, training=True, **common).map(
            lambda x, y: ({"image": x["image"], "audio": x["audio"]}, 0.0 * keras.ops.cast(y, "float32")))
        autoencoder.fit(unlabelled, epochs=config["pretrain_epochs"], verbose=0)
        for modality in ("image", "audio"):
            autoencoder.get_layer(f"{modality}_encoder").save_weights(os.path.join(encoders, f"ae-{modality}.weights.h5"))
        pretrain_seconds = time.perf_counter() - t

        labelled_ds = {p: make_dataset(labelled, training=True, modality_dropout=p, **common)
                       for p in (0.0, config["modality_dropout"])}

        def fit(model, dropout, epochs):
            inputs = set(model.input)
            select = lambda ds: ds.map(lambda x, y: ({k: v for k, v in x.items() if k in inputs}, y))  # noqa: E731
            model.fit(select(labelled_ds[dropout]), epochs=epochs, shuffle=False, verbose=0)
            return float(model.evaluate(select(test), verbose=0, return_dict=True)["accuracy"])

        # Unimodal supervised pretraining on the labelled rows.
        t = time.perf_counter()
        for modality in ("image", "audio"):
            keras.utils.set_random_seed(SPEC["seed"])
            single = build_fusion_model(**{modality: ENCODERS[modality]}, dropout=0.2,
                                        audio_kwargs=audio_kwargs if modality == "audio" else None, **pre.model_kwargs())
            out[f"{modality} only"] = fit(single, 0.0, config["single_epochs"])
            single.get_layer(f"{modality}_encoder").save_weights(os.path.join(encoders, f"sup-{modality}.weights.h5"))
        single_seconds = time.perf_counter() - t

        for way in WAYS:
            prefix = {"autoencoder": "ae", "unimodal supervised": "sup"}.get(way)
            image_kwargs = {"weights": os.path.join(encoders, f"{prefix}-image.weights.h5")} if prefix else None
            audio = {**audio_kwargs, **({"weights": os.path.join(encoders, f"{prefix}-audio.weights.h5")} if prefix else {})}
            keras.utils.set_random_seed(SPEC["seed"])
            model = build_fusion_model(**ENCODERS, fusion="concat", missing_modalities=True, fusion_kwargs={"units": 64},
                                       dropout=0.2, image_kwargs=image_kwargs, audio_kwargs=audio, **pre.model_kwargs())
            t = time.perf_counter()
            out[way] = fit(model, config["modality_dropout"], config["epochs"])
            if verbose:
                print(f"  [{speaker}] {way:<22} {out[way]:.1%}  ({time.perf_counter() - t:.0f} s)", flush=True)
    out["seconds"] = {"autoencoder pretraining": pretrain_seconds, "single models": single_seconds}
    out["labelled rows"] = sum(1 for _ in open(labelled, encoding="utf-8")) - 1
    return out


def text_table(config_epochs=15):
    """Tiny random BERT (KerasHub preset) vs LSTM on the demo sentences."""
    import keras
    import keras_hub

    from mbm_keras import build_fusion_model
    from mbm_keras.data import TextTokenizer, fit_preprocessor, make_dataset
    from mbm_keras.demo.data import write_demo_dataset

    rows = {}
    with tempfile.TemporaryDirectory(prefix="pretraining-text-") as tmp:
        write_demo_dataset(os.path.join(tmp, "demo"), seed=0)
        train, val, test = (os.path.join(tmp, "demo", f"{s}.csv") for s in ("train", "val", "test"))
        from mbm_keras.data import read_manifest

        texts = [r["text"] for r in read_manifest(train).rows]
        pieces = TextTokenizer("wordpiece", 16, max_tokens=400).fit(texts).vocabulary[2:]
        vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [p for p in pieces if not p.startswith("[")]
        folder = os.path.join(tmp, "tiny_bert")
        keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=64,
                                      intermediate_dim=128, max_sequence_length=32,
                                      name="bert_backbone").save_to_preset(folder)
        keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(folder)
        for name, encoder, options in (("lstm (word tokens)", "lstm", {"text_tokenizer": "word"}),
                                       ("tiny BERT preset, random weights", "keras_hub",
                                        {"text_tokenizer": "preset", "text_preset": folder})):
            pre = fit_preprocessor(train, {"text": "text", "label": "label"}, text_length=16, **options)
            keras.utils.set_random_seed(0)
            model = build_fusion_model(text=encoder, learning_rate=1e-3, **pre.model_kwargs())
            t = time.perf_counter()
            model.fit(make_dataset(train, preprocessor=pre, training=True, batch_size=32, seed=0, verbose=False),
                      validation_data=make_dataset(val, preprocessor=pre, batch_size=32, verbose=False),
                      epochs=config_epochs, verbose=0)
            accuracy = model.evaluate(make_dataset(test, preprocessor=pre, batch_size=32, verbose=False), verbose=0,
                                      return_dict=True)["accuracy"]
            rows[name] = {"accuracy": float(accuracy), "params": int(model.count_params()),
                          "seconds": time.perf_counter() - t}
            print(f"  text: {name:<34} test accuracy {accuracy:.1%}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_file_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="one fold (test speaker theo), e.g. --quick")
    parser.add_argument("--folds", nargs="+", help="test speakers, e.g. --folds theo george (default: every speaker)")
    parser.add_argument("--out", help="markdown file, e.g. --out /tmp/pretraining.md "
                        "(default: benchmarks/results/pretraining.md)")
    args = parser.parse_args(argv)
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "pretraining-quick.md" if args.quick else "pretraining.md")
    start = time.time()
    table, info = build_files(args.data, args.work)
    folds = tuple(args.folds or settings["folds"] or sorted({r["speaker"] for r in table}))
    print(f"AV-digits, {LABELLED:.0%} of the training labels; folds {', '.join(folds)}", flush=True)
    per_fold = {s: run_fold(table, info["folder"], s, settings, CONFIG) for s in folds}
    text = text_table()

    def stat(key):
        values = np.array([per_fold[s][key] for s in folds])
        return values.mean(), values.std()

    lines = [f"AV-digits with {LABELLED:.0%} of the training labels (about "
             f"{np.mean([per_fold[s]['labelled rows'] for s in folds]):.0f} labelled rows per fold; every training "
             f"file for the autoencoders), test accuracy with both modalities, mean ± std over {len(folds)} "
             f"speaker fold(s) ({', '.join(folds)}).", "",
             "| model | test accuracy |", "| --- | --- |"]
    for key in ("image only", "audio only") + WAYS:
        mean, std = stat(key)
        label = key if key in ("image only", "audio only") else f"concat fusion, {key}"
        lines.append(f"| {label} | {mean:.1%} ± {std:.1%} |")
    gain = stat("autoencoder")[0] - stat("from scratch")[0]
    met = gain >= TARGET
    lines += ["", f"Autoencoder pretraining vs from scratch: {gain * 100:+.1f} points (target >= +{TARGET * 100:.0f}): "
              f"{'met' if met else 'NOT met'}.",
              f"Settings: {json.dumps(CONFIG)}; audio {settings['audio_length']} samples at {SPEC['sample_rate']} Hz.", "",
              "KerasHub text path, demo sentences (8 classes), 15 epochs:", "",
              "| text encoder | test accuracy | parameters |", "| --- | --- | --- |"]
    lines += [f"| {name} | {r['accuracy']:.1%} | {r['params']:,} |" for name, r in text.items()]
    lines += ["", f"Total time {(time.time() - start) / 60:.1f} min on {os.cpu_count()} CPU cores."]
    report = "\n".join(lines)
    print(report, flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        f.write("# Pretraining benchmark\n\n" + report + "\n")
    os.replace(args.out + ".tmp", args.out)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"config": CONFIG, "per_fold": per_fold, "text": text, "gain": gain}, f, indent=1)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
