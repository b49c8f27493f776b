"""AV-MNIST-style benchmark on real recordings and handwriting: does fusion beat
one modality, and does it cope when a modality is missing or noisy?

Each example pairs a spoken digit (Free Spoken Digit Dataset, 5 speakers) with a
handwritten image of the same digit (MNIST test set). As in AV-MNIST (Vielzeuf
et al., 2018), both are made harder so that neither is enough alone:

- images keep only the top principal components holding 25% of the pixel
  energy (PCA fitted on the training-image pool only);
- recordings get white noise mixed in at a fixed signal-to-noise ratio.

Speaker-independent: train on four speakers, test on the fifth, rotating over
all five (mean and spread over the folds); the train and test image pools are
disjoint. Everything goes through the library's public API: real PNG/WAV files
and manifests -> `fit_preprocessor` / `make_dataset` -> `build_fusion_model` ->
`model.fit` / `model.evaluate`.

Per model it reports test accuracy with both modalities, with the image
missing, with the audio missing, with stronger audio noise at two levels, and
the parameters and training time. The models:

- image only, audio only;
- each fusion of the zoo, "<fusion> + dropout": it starts from the encoders of
  that fold's two single models (unimodal pretraining: saved with
  `model.get_layer("audio_encoder").save_weights(...)`, loaded through
  `build_fusion_model`'s `weights=` / `audio_kwargs={"weights": ...}`), then
  trains half as many epochs with modality dropout. In an earlier version that
  trained them from scratch, the fusions leaned on the stronger image and lost
  3 to 10 points against audio only when the image was missing (one modality
  starving the other's features; cf. Du et al., ICML 2023, on uni-modal
  feature learning in multi-modal training);
- "concat + dropout, from scratch", the control for that; `--models ...
  'concat, no dropout'` adds the control for modality dropout.

Then it checks the targets: the best fusion >= the best single modality + 5
points, and the best fusion trained with modality dropout loses <= 3 points
against the single-modality model of the modality left when the other is
missing (shown for every fusion).

Encoders: small_cnn for the images, logmel_cnn with a 20 ms hop for the audio.

Usage:
    python benchmarks/av_digits.py --data ../shared/data            # 5 folds, under 30 min on 2 cores
    python benchmarks/av_digits.py --data ../shared/data --quick    # 1 fold, fewer epochs, under 5 min

Writes the table to benchmarks/results/av_digits.md (`--out`); the generated
PNG/WAV files go to ~/.cache/mbm_keras/ (`--work`), never into the repository.
"""

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import wave

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SPEC = {
    "version": 1,
    "seed": 0,
    "image_energy": 0.25,  # share of PCA energy the images keep
    "snr_db": 0.0,  # the fixed noise level of every recording (train and test)
    "stronger_snr_db": (-6.0, -12.0),  # test-time noise levels for the "noisier audio" columns
    "sample_rate": 8000,
}
FUSIONS = ("concat", "gated", "attention", "low_rank_tensor", "late", "transformer", "cross_attention")
ENCODERS = {"image": "small_cnn", "audio": "logmel_cnn"}
SETTINGS = {  # training settings of the full run and of --quick
    "full": {"folds": None, "epochs": 8, "audio_length": 4000, "batch_size": 32, "modality_dropout": 0.5,
             "audio_kwargs": {"hop_ms": 20.0}},  # None: every speaker in the data
    "quick": {"folds": ("theo",), "epochs": 6, "audio_length": 4000, "batch_size": 32, "modality_dropout": 0.5,
              "audio_kwargs": {"hop_ms": 20.0}},
}
FUSION_MARGIN, DROPOUT_LOSS = 0.05, 0.03


# ----------------------------------------------------------------------------------------------- data


def load_mnist(folder):
    """`(images uint8 (n, 28, 28), labels int64 (n,))` from the IDX files in `folder`
    (`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`)."""
    paths = [os.path.join(folder, f"t10k-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1")]
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"MNIST file not found: {p} (expected the MNIST test set's IDX files in {folder})")
    with gzip.open(paths[0]) as f:
        raw = f.read()
    if int.from_bytes(raw[:4], "big") != 2051:
        raise ValueError(f"{paths[0]}: not an IDX image file (magic {int.from_bytes(raw[:4], 'big')}, expected 2051)")
    n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)
    with gzip.open(paths[1]) as f:
        raw = f.read()
    if int.from_bytes(raw[:4], "big") != 2049:
        raise ValueError(f"{paths[1]}: not an IDX label file (magic {int.from_bytes(raw[:4], 'big')}, expected 2049)")
    labels = np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)
    if len(labels) != n:
        raise ValueError(f"{folder}: {n} images but {len(labels)} labels")
    return images, labels


def list_recordings(folder):
    """The FSDD recordings in `folder`, named `{digit}_{speaker}_{take}.wav`, as
    a list of dicts (`path`, `digit`, `speaker`, `take`) in a fixed order."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"FSDD folder not found: {folder}")
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".wav"):
            continue
        parts = name[:-4].split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise ValueError(f"{os.path.join(folder, name)}: expected a name like 3_theo_12.wav")
        out.append({"path": os.path.join(folder, name), "digit": int(parts[0]), "speaker": parts[1], "take": int(parts[2])})
    if not out:
        raise FileNotFoundError(f"No .wav recordings in {folder}")
    return out


class PCADegrader:
    """Keeps the top principal components holding `energy` of the (centred)
    pixel energy of the images it is fitted on, and projects images onto them."""

    def __init__(self, energy):
        if not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1]. Received: energy={energy!r}")
        self.energy = energy

    def fit(self, images):
        x = images.reshape(len(images), -1).astype(np.float64)
        self.mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        self.num_components = min(int(np.searchsorted(share, self.energy) + 1), len(share))  # energy 1: all of them
        self.kept_energy = float(share[self.num_components - 1])
        self.components = vt[: self.num_components]
        return self

    def transform(self, images):
        x = images.reshape(len(images), -1).astype(np.float64) - self.mean
        x = self.mean + (x @ self.components.T) @ self.components
        return np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(images.shape)


def read_wav(path):
    """float32 samples in [-1, 1] and the rate of a 16-bit mono WAV file."""
    with wave.open(path, "rb") as f:
        if f.getsampwidth() != 2 or f.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono WAV, got {8 * f.getsampwidth()}-bit, {f.getnchannels()} channels")
        rate = f.getframerate()
        samples = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768
    return samples, rate


def write_wav(path, samples, rate):
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def mix_noise(samples, snr_db, rng):
    """`samples` plus white Gaussian noise at `snr_db` (signal RMS over noise
    RMS, in dB), scaled down as a whole if it would clip."""
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    noisy = samples + rng.normal(0, rms / 10 ** (snr_db / 20), samples.shape)
    peak = np.max(np.abs(noisy))
    return (noisy / peak * 0.99 if peak > 0.99 else noisy).astype(np.float32)


def pair_images(recordings, labels, seed):
    """For each recording, one training-pool and one test-pool image index with
    the recording's digit. The pools are disjoint and no image is used twice."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = np.zeros(len(recordings), np.int64), np.zeros(len(recordings), np.int64)
    digits = np.array([r["digit"] for r in recordings])
    for d in np.unique(digits):
        mine = np.flatnonzero(digits == d)
        pool = rng.permutation(np.flatnonzero(labels == d))
        if len(pool) < 2 * len(mine):
            raise ValueError(f"digit {d}: {len(mine)} recordings need {2 * len(mine)} images, the MNIST files have {len(pool)}")
        train_idx[mine], test_idx[mine] = pool[: len(mine)], pool[len(mine) : 2 * len(mine)]
    return train_idx, test_idx


def _png(image):
    import tensorflow as tf  # data side

    return tf.io.encode_png(image[..., None]).numpy()


def build_files(data, work, spec=SPEC, verbose=True):
    """Writes the benchmark's files under `work` once per `spec` and returns
    `(table, info)`: one row per recording with its digit, speaker and the
    paths (relative to the files' folder) of its degraded training-pool and
    test-pool images and of its audio at each noise level.

    `data` holds `fsdd/` and `mnist/` as in ../shared/data. The files are
    built in a temporary folder and renamed into place when complete."""
    key = hashlib.sha1(json.dumps({**spec, "data": os.path.abspath(data)}, sort_keys=True).encode()).hexdigest()[:10]
    folder = os.path.join(work, f"av_digits-v{spec['version']}-{key}")
    if os.path.isfile(os.path.join(folder, "table.json")):
        with open(os.path.join(folder, "table.json"), encoding="utf-8") as f:
            saved = json.load(f)
        return saved["table"], {**saved["info"], "folder": folder}

    start = time.time()
    recordings = list_recordings(os.path.join(data, "fsdd"))
    images, labels = load_mnist(os.path.join(data, "mnist"))
    train_idx, test_idx = pair_images(recordings, labels, spec["seed"])
    pca = PCADegrader(spec["image_energy"]).fit(images[train_idx])  # training pool only
    levels = (spec["snr_db"],) + tuple(spec["stronger_snr_db"])
    os.makedirs(work, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".av_digits-", dir=work)
    try:
        for sub in ("images", "audio"):
            os.makedirs(os.path.join(tmp, sub))
        table = []
        for pool, idx in (("train", train_idx), ("test", test_idx)):
            degraded = pca.transform(images[idx])
            for i, r in enumerate(recordings):
                name = f"images/{pool}-{idx[i]:05d}.png"
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(_png(degraded[i]))
                if pool == "train":
                    table.append({"digit": r["digit"], "speaker": r["speaker"], "take": r["take"], "image_train": name})
                else:
                    table[i]["image_test"] = name
        for i, r in enumerate(recordings):
            samples, rate = read_wav(r["path"])
            if rate != spec["sample_rate"]:
                raise ValueError(f"{r['path']}: {rate} Hz, expected {spec['sample_rate']}")
            rng = np.random.default_rng([spec["seed"], i])
            base = os.path.splitext(os.path.basename(r["path"]))[0]
            for j, snr in enumerate(levels):
                name = f"audio/{base}-snr{snr:+.0f}.wav"
                write_wav(os.path.join(tmp, name), mix_noise(samples, snr, rng), rate)
                table[i][f"audio_{j}"] = name
            if verbose and (i + 1) % 500 == 0:
                print(f"  files: {i + 1}/{len(recordings)} recordings", flush=True)
        info = {
            "recordings": len(recordings),
            "pca_components": pca.num_components,
            "pca_energy": pca.kept_energy,
            "snr_db": list(levels),
            "seconds": time.time() - start,
        }
        with open(os.path.join(tmp, "table.json"), "w", encoding="utf-8") as f:
            json.dump({"table": table, "info": info}, f)
        if os.path.isdir(folder):  # an incomplete older build
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return table, {**info, "folder": folder}


CONDITIONS = ("both", "image missing", "audio missing", "noisier audio 1", "noisier audio 2")


def fold_manifests(table, folder, test_speaker, seen_takes=False):
    """`(train, conditions)`: the path of the training manifest (the other
    speakers, their training-pool images, base noise) and of one test manifest
    per condition of CONDITIONS (the test speaker, test-pool images; an empty
    cell is a missing modality). The CSVs go to `folder`.

    `seen_takes=True` is a diagnostic, not a speaker-independent fold: the test
    speaker's even takes join training and only the odd takes are tested."""
    from mbm_keras.data import Manifest, write_manifest

    if test_speaker not in {r["speaker"] for r in table}:
        raise ValueError(f"No recordings of speaker {test_speaker!r} (speakers: {sorted({r['speaker'] for r in table})})")
    columns = ["image", "audio", "label", "speaker"]

    def tested(r):
        return r["speaker"] == test_speaker and (not seen_takes or r["take"] % 2 == 1)

    def write(name, test, image, audio):
        rows = [{"image": image(r), "audio": audio(r), "label": str(r["digit"]), "speaker": r["speaker"]}
                for r in table if tested(r) == test]
        path = os.path.join(folder, f"{test_speaker}{'-seen' if seen_takes else ''}-{name}.csv")
        return write_manifest(Manifest(os.path.join(folder, "table.csv"), rows, columns), path, path_columns=["image", "audio"])

    train = write("train", False, lambda r: r["image_train"], lambda r: r["audio_0"])
    test = {
        "both": write("test", True, lambda r: r["image_test"], lambda r: r["audio_0"]),
        "image missing": write("test-image-missing", True, lambda r: None, lambda r: r["audio_0"]),
        "audio missing": write("test-audio-missing", True, lambda r: r["image_test"], lambda r: None),
        "noisier audio 1": write("test-noisier-audio-1", True, lambda r: r["image_test"], lambda r: r["audio_1"]),
        "noisier audio 2": write("test-noisier-audio-2", True, lambda r: r["image_test"], lambda r: r["audio_2"]),
    }
    return train, test


# ------------------------------------------------------------------------------------------ training


def model_specs(modality_dropout):
    """name -> (encoders, fusion, modality_dropout, pretrained) of every model the benchmark can train.

    The fusions of the zoo ("<fusion> + dropout") start from the encoders of the
    fold's image-only and audio-only models (unimodal pretraining), then train
    with modality dropout. Two controls show what each half of that recipe buys:
    "concat + dropout, from scratch" (default) and "concat, no dropout" (`--models`)."""
    specs = {"image only": ({"image": ENCODERS["image"]}, None, 0.0, False),
             "audio only": ({"audio": ENCODERS["audio"]}, None, 0.0, False)}
    for fusion in FUSIONS:
        specs[f"{fusion} + dropout"] = (ENCODERS, fusion, modality_dropout, True)
    specs["concat + dropout, from scratch"] = (ENCODERS, "concat", modality_dropout, False)
    specs["concat, no dropout"] = (ENCODERS, "concat", 0.0, True)
    return specs


SINGLES = ("image only", "audio only")
DEFAULT_MODELS = SINGLES + tuple(f"{f} + dropout" for f in FUSIONS) + ("concat + dropout, from scratch",)


def fusion_epochs(epochs):
    """Epochs of a fusion that starts from pretrained encoders: half the single models' epochs."""
    return max(1, epochs // 2)


def run_fold(table, folder, test_speaker, settings, models=None, verbose=1):
    """Trains every model (or those named in `models`) on one fold; returns
    {model: {"accuracy": {condition: value}, "params": n, "seconds": s}}."""
    import keras

    from mbm_keras import build_fusion_model
    from mbm_keras.data import fit_preprocessor, make_dataset

    train_manifest, tests = fold_manifests(table, folder, test_speaker)
    pre = fit_preprocessor(train_manifest, {"image": "image", "audio": "audio", "label": "label"}, image_size=(28, 28),
                           sample_rate=SPEC["sample_rate"], audio_length=settings["audio_length"])
    common = dict(preprocessor=pre, batch_size=settings["batch_size"], seed=SPEC["seed"], missing_modalities=True,
                  cache="memory", verify="header", verbose=bool(verbose))
    train_sets = {p: make_dataset(train_manifest, training=True, modality_dropout=p, **common)
                  for p in sorted({0.0, settings["modality_dropout"]})}
    test_sets = {c: make_dataset(m, **common) for c, m in tests.items()}

    results = {}
    specs = model_specs(settings["modality_dropout"])
    models = list(models or DEFAULT_MODELS)
    if any(specs[n][3] for n in models) and not set(SINGLES) <= set(models):
        raise ValueError(f"models {models}: the pretrained fusions start from the encoders of {list(SINGLES)}; include both")
    models.sort(key=lambda n: n not in SINGLES)  # the single models first: their encoders seed the fusions
    with tempfile.TemporaryDirectory(prefix="av_digits-encoders-") as encoder_dir:
        for name in models:
            encoders, fusion, dropout, pretrained = specs[name]
            kwargs = {"audio_kwargs": dict(settings["audio_kwargs"]) if "audio" in encoders else None}
            epochs = settings["epochs"]
            if pretrained:  # weights files saved from the single models below
                kwargs["weights"] = os.path.join(encoder_dir, "image.weights.h5")
                kwargs["audio_kwargs"]["weights"] = os.path.join(encoder_dir, "audio.weights.h5")
                epochs = fusion_epochs(epochs)
            keras.utils.set_random_seed(SPEC["seed"])
            model = build_fusion_model(**encoders, fusion=fusion or "concat", missing_modalities=fusion is not None,
                                       fusion_kwargs={} if fusion == "late" else {"units": 64}, dropout=0.2,
                                       **kwargs, **pre.model_kwargs())
            inputs = set(model.input)
            select = lambda ds: ds.map(lambda x, y: ({k: v for k, v in x.items() if k in inputs}, y))  # noqa: E731
            t = time.perf_counter()
            model.fit(select(train_sets[dropout]), epochs=epochs, shuffle=False, verbose=0)
            seconds = time.perf_counter() - t
            if fusion is None:  # keep this single model's encoder for the pretrained fusions
                (modality,) = encoders
                model.get_layer(f"{modality}_encoder").save_weights(os.path.join(encoder_dir, f"{modality}.weights.h5"))
            elif pretrained:  # its training time includes that of the two single models it starts from
                seconds += sum(results[n]["seconds"] for n in SINGLES)
            accuracy = {}
            for condition, ds in test_sets.items():
                gone = {"image missing": "image", "audio missing": "audio"}.get(condition)
                if gone and fusion is None and gone in encoders:
                    accuracy[condition] = None  # its only input is missing
                else:
                    accuracy[condition] = float(model.evaluate(select(ds), verbose=0, return_dict=True)["accuracy"])
            results[name] = {"accuracy": accuracy, "params": int(model.count_params()), "seconds": seconds,
                             "epochs": epochs}
            if verbose:
                print(f"  [{test_speaker}] {name:<30} both {accuracy['both']:.1%}  ({seconds:.0f} s)", flush=True)
    return results


# ------------------------------------------------------------------------------------------- report


def summarize(per_fold):
    """Mean and spread over folds: {model: {"accuracy": {cond: (mean, std)}, "params", "seconds"}},
    and the targets' checks."""
    names = list(next(iter(per_fold.values())))
    summary = {}
    for name in names:
        runs = [per_fold[f][name] for f in per_fold]
        acc = {}
        for c in CONDITIONS:
            values = [r["accuracy"][c] for r in runs]
            acc[c] = None if values[0] is None else (float(np.mean(values)), float(np.std(values)))
        summary[name] = {"accuracy": acc, "params": runs[0]["params"], "seconds": float(np.mean([r["seconds"] for r in runs]))}

    both = {n: summary[n]["accuracy"]["both"][0] for n in names}
    fusions = [n for n in names if n not in SINGLES]
    best_single = max(SINGLES, key=both.get)
    best_fusion = max(fusions, key=both.get)
    checks = {
        "best_single": best_single,
        "best_fusion": best_fusion,
        "margin": both[best_fusion] - both[best_single],
    }
    checks["margin_ok"] = checks["margin"] >= FUSION_MARGIN
    losses, changes = {}, {}
    for n in (f for f in fusions if "+ dropout" in f):  # not the "concat, no dropout" control
        image_missing = summary[n]["accuracy"]["image missing"][0] - both["audio only"]
        audio_missing = summary[n]["accuracy"]["audio missing"][0] - both["image only"]
        losses[n] = -min(image_missing, audio_missing)
        changes[n] = {"image missing": image_missing, "audio missing": audio_missing}
    checks["dropout_loss"] = losses
    checks["missing_change"] = changes
    checks["dropout_ok"] = {n: v <= DROPOUT_LOSS for n, v in losses.items()}
    # The target is checked on the best fusion trained with modality dropout.
    checks["dropout_model"] = max(losses, key=both.get) if losses else None
    checks["best_fusion_dropout_ok"] = checks["dropout_ok"].get(checks["dropout_model"], False)
    return summary, checks


def format_table(summary, checks, folds, info, settings, command, mode):
    fmt = lambda v: "n/a" if v is None else (f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}" if len(folds) > 1 else f"{100 * v[0]:.1f}")  # noqa: E731
    snr = info["snr_db"]
    lines = [
        f"Test accuracy (%) on held-out speakers, {'mean ± std over ' + str(len(folds)) + ' folds' if len(folds) > 1 else 'one fold'} "
        f"(test speaker{'s' if len(folds) > 1 else ''}: {', '.join(folds)}); chance = 10%.",
        f"Images keep {info['pca_components']} principal components ({info['pca_energy']:.1%} of the energy); "
        f"audio noise at {snr[0]:+.0f} dB SNR, noisier audio 1 / 2 at {snr[1]:+.0f} / {snr[2]:+.0f} dB.",
        f"Single models train {settings['epochs']} epochs. The '<fusion> + dropout' models start from the encoders of "
        f"that fold's two single models (unimodal pretraining), then train {fusion_epochs(settings['epochs'])} epochs with "
        f"modality dropout {settings['modality_dropout']}; their train s includes the single models'. "
        f"'from scratch' trains {settings['epochs']} epochs from random weights.",
        "",
        "| model | " + " | ".join(CONDITIONS) + " | params | train s |",
        "| --- | " + " | ".join("---:" for _ in CONDITIONS) + " | ---: | ---: |",
    ]
    for name, s in summary.items():
        cells = [fmt(s["accuracy"][c]) for c in CONDITIONS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['params']:,} | {s['seconds']:.0f} |")
    lines += [
        "",
        f"- Best fusion ({checks['best_fusion']}) - best single modality ({checks['best_single']}): "
        f"{100 * checks['margin']:+.1f} points ({'OK' if checks['margin_ok'] else 'MISSED'}: target >= +{100 * FUSION_MARGIN:.0f}).",
    ]
    d = checks["dropout_model"]
    if d is not None:
        change = checks["missing_change"][d]
        lines.append(f"- Best fusion trained with modality dropout ({d}), one modality missing: "
                     f"{100 * change['image missing']:+.1f} points vs audio only with the image missing, "
                     f"{100 * change['audio missing']:+.1f} vs image only with the audio missing "
                     f"({'OK' if checks['best_fusion_dropout_ok'] else 'MISSED'}: target >= -{100 * DROPOUT_LOSS:.0f}).")
        lines.append("- Every fusion trained with modality dropout, worst of the two: "
                     + ", ".join(f"{n.replace(' + dropout', '')} {-100 * v:+.1f}{'' if checks['dropout_ok'][n] else ' (misses)'}"
                                 for n, v in checks["dropout_loss"].items()) + ".")
    lines += ["", f"Mode: {mode}. Produced by:", "", "```", command, "```"]
    return "\n".join(lines)


def add_file_arguments(parser):
    """--data and --work, the arguments of every benchmark built on these files."""
    parser.add_argument("--data", required=True, help="folder with fsdd/ and mnist/, e.g. ../shared/data")
    parser.add_argument("--work", default=os.path.join(os.path.expanduser("~"), ".cache", "mbm_keras"),
                        help="where the generated PNG/WAV files go (default: ~/.cache/mbm_keras)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_file_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="one fold (test speaker theo), 6 epochs (fusions 3): under 5 minutes")
    parser.add_argument("--folds", nargs="+", help="test speakers to rotate over, e.g. --folds theo george (default: every speaker)")
    parser.add_argument("--epochs", type=int, help="override the single models' training epochs (pretrained fusions train half), e.g. --epochs 12")
    parser.add_argument("--models", nargs="+", help="train these models (default: the single modalities, every fusion "
                        "with modality dropout and 'concat + dropout, from scratch'), e.g. --models 'image only' 'audio only' 'concat, no dropout'")
    parser.add_argument("--out", help="markdown file for the table, e.g. --out /tmp/av.md (default: "
                        "benchmarks/results/av_digits.md, with --quick av_digits-quick.md)")
    args = parser.parse_args(argv)

    mode = "quick" if args.quick else "full"
    args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "av_digits-quick.md" if args.quick else "av_digits.md")
    settings = dict(SETTINGS[mode])
    if args.folds:
        settings["folds"] = tuple(args.folds)
    if args.epochs:
        settings["epochs"] = args.epochs
    if args.models:
        unknown = [m for m in args.models if m not in model_specs(0.3)]
        if unknown:
            parser.error(f"unknown model(s) {unknown}; choose from {list(model_specs(0.3))}")
        if not {"image only", "audio only"} <= set(args.models):
            parser.error("--models must include 'image only' and 'audio only' (the targets compare against them)")

    start = time.time()
    print(f"[1/3] Building the AV-digits files from {args.data} (cached under {args.work})", flush=True)
    try:
        table, info = build_files(args.data, args.work)
    except (FileNotFoundError, ValueError) as e:
        parser.error(f"--data {args.data}: {e}")
    unknown = sorted(set(settings["folds"] or ()) - {r["speaker"] for r in table})
    if unknown:
        parser.error(f"--folds: no recordings of {unknown} in {args.data}; speakers: {sorted({r['speaker'] for r in table})}")
    print(f"      {info['recordings']} pairs; images keep {info['pca_components']} PCA components "
          f"({info['pca_energy']:.1%} energy); audio SNR {info['snr_db'][0]:+.0f} dB", flush=True)
    settings["folds"] = settings["folds"] or tuple(sorted({r["speaker"] for r in table}))
    print(f"[2/3] Training {len(args.models or DEFAULT_MODELS)} models x {len(settings['folds'])} fold(s), "
          f"{settings['epochs']} epochs each ({fusion_epochs(settings['epochs'])} for the pretrained fusions)", flush=True)
    per_fold = {}
    for speaker in settings["folds"]:
        per_fold[speaker] = run_fold(table, info["folder"], speaker, settings, models=args.models)
    summary, checks = summarize(per_fold)
    command = "python benchmarks/av_digits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = format_table(summary, checks, list(settings["folds"]), info, settings, command, mode)
    text += f"\n\nTotal time {(time.time() - start) / 60:.1f} min on {os.cpu_count()} CPU cores.\n"
    print("[3/3] Results\n" + text, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        f.write("# AV-digits benchmark\n\n" + text)
    os.replace(args.out + ".tmp", args.out)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "info": info, "per_fold": per_fold, "checks": checks}, f, indent=1)
    print(f"Written to {args.out}", flush=True)
    return 0 if checks["margin_ok"] and checks["best_fusion_dropout_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
