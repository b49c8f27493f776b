"""Do the explanations point where they should? AV-digits (a spoken digit and a handwritten one, both made
hard: benchmarks/av_digits.py) explained by `mbm_keras.explain`:

- audio: the share of the audio attribution's mass (|integrated gradients| per log-mel frame) that falls in
  frames where the digit is spoken (the clean recording's frames within 20 dB of its loudest), against the
  share of frames that are spoken (what attribution spread evenly would give);
- image: the share of the image attribution's mass on the digit's pixels (the original MNIST digit's ink,
  above half intensity) against the share of pixels that are ink; with a black and with a blurred baseline
  (a black baseline gives an all-black background no attribution by construction, the blurred one does not);
- modality Shapley values (the model's own masks): clean test rows, then the audio corrupted (mixed with
  noise at -12 dB instead of 0 dB), then the image corrupted (another digit's image): each corruption should
  lower its modality's share of the answer.

One fold (the test speaker held out), one concat fusion trained with masks and modality dropout.

    python benchmarks/explain.py --data ../shared/data               # about 4 minutes on 2 cores
    python benchmarks/explain.py --data ../shared/data --rows 100
    python benchmarks/explain.py --data ../shared/data --image-energy 1   # the digits not smeared
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import av_digits  # noqa: E402


def train_fold(table, folder, speaker, epochs):
    import keras

    from mbm_keras import build_fusion_model
    from mbm_keras.data import fit_preprocessor, make_dataset

    train_manifest, tests = av_digits.fold_manifests(table, folder, speaker)
    pre = fit_preprocessor(train_manifest, {"image": "image", "audio": "audio", "label": "label"}, image_size=(28, 28),
                           sample_rate=av_digits.SPEC["sample_rate"], audio_length=4000)
    keras.utils.set_random_seed(0)
    model = build_fusion_model(image="small_cnn", audio="logmel_cnn", fusion="concat", missing_modalities=True,
                               fusion_kwargs={"units": 64}, dropout=0.2, audio_kwargs={"hop_ms": 20.0},
                               **pre.model_kwargs())
    train = make_dataset(train_manifest, preprocessor=pre, training=True, modality_dropout=0.5, missing_modalities=True,
                         batch_size=32, seed=0, cache="memory", verbose=False)
    model.fit(train, epochs=epochs, shuffle=False, verbose=0)
    return model, pre, tests


def _dilate(mask, pixels):
    """`mask` grown by `pixels` in every direction (a square neighbourhood)."""
    out = mask.copy()
    padded = np.pad(mask, pixels)
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def batch(manifest, pre, rows):
    from mbm_keras.data import make_dataset, read_manifest

    chosen = read_manifest(manifest).subset(rows)
    x, y = next(iter(make_dataset(chosen, preprocessor=pre, batch_size=len(rows), missing_modalities=True,
                                  verbose=False)))
    return {k: np.asarray(v) for k, v in x.items()}, np.asarray(y)


def speech_frames(path, layer, length):
    """Which of the model's log-mel frames hold speech: the clean recording, cropped as the model crops it (the
    start), framed as the layer frames it (centred: frame i around sample i * hop), each frame's RMS within
    20 dB of the loudest frame's."""
    samples, _ = av_digits.read_wav(path)
    samples = np.pad(samples[:length], (0, max(0, length - len(samples))))
    hop, width = int(layer.sequence_stride), int(layer.sequence_length)
    padded = np.pad(samples, (width // 2, width // 2))
    frames = [padded[i * hop:i * hop + width] for i in range(1 + (len(padded) - width) // hop)]
    rms = np.array([np.sqrt(np.mean(f ** 2)) if len(f) else 0.0 for f in frames])
    return rms >= rms.max() * 10 ** (-20 / 20)


def main(argv=None):
    from mbm_keras.explain import integrated_gradients, modality_shapley

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    parser.add_argument("--work", default=os.path.join(os.path.expanduser("~"), ".cache", "mbm_keras"))
    parser.add_argument("--speaker", default="theo")
    parser.add_argument("--rows", type=int, default=60, help="test rows explained")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-energy", type=float, default=av_digits.SPEC["image_energy"],
                        help="share of PCA energy the images keep (1: the MNIST digits as they are)")
    args = parser.parse_args(argv)
    start = time.time()
    table, info = av_digits.build_files(args.data, args.work, spec={**av_digits.SPEC, "image_energy": args.image_energy})
    folder = info["folder"]  # the fold's manifests sit beside the files (as benchmarks/av_digits.py writes them)
    print(f"Training the fusion (test speaker {args.speaker}) ...", flush=True)
    model, pre, tests = train_fold(table, folder, args.speaker, args.epochs)
    tested = [r for r in table if r["speaker"] == args.speaker]
    rng = np.random.default_rng(0)
    rows = sorted(rng.choice(len(tested), size=min(args.rows, len(tested)), replace=False).tolist())
    x, y = batch(tests["both"], pre, rows)
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))
    print(f"  accuracy on the {len(rows)} explained rows: {accuracy:.1%}", flush=True)

    # Audio: attribution mass in the spoken frames.
    recordings = av_digits.list_recordings(os.path.join(args.data, "fsdd"))
    by_key = {(r["speaker"], r["digit"], r["take"]): r["path"] for r in recordings}
    log_mel = model.get_layer("audio_encoder").get_layer("log_mel")
    images, _ = av_digits.load_mnist(os.path.join(args.data, "mnist"))
    audio_share, audio_chance, image_share, image_chance = [], [], {"black": [], "blur": []}, []
    near_share, near_chance = {"black": [], "blur": []}, []  # the ink and the 2-pixel ring around its strokes
    for i, row in enumerate(rows):
        r = tested[row]
        example = {k: v[i:i + 1] for k, v in x.items()}
        black = integrated_gradients(model, example)
        mass = np.abs(black.features["audio"]).sum(axis=1)  # per frame
        spoken = speech_frames(by_key[(r["speaker"], r["digit"], r["take"])], log_mel, 4000)[:len(mass)]
        audio_share.append(mass[spoken].sum() / mass.sum())
        audio_chance.append(spoken.mean())
        ink = images[int(r["image_test"].split("-")[1].split(".")[0])] >= 128  # the original digit, 28x28
        image_chance.append(ink.mean())
        near = _dilate(ink, 2)
        near_chance.append(near.mean())
        for how, a in (("black", black), ("blur", integrated_gradients(model, example, target=black.target,
                                                                     baselines={"image": "blur"}))):
            heat = np.abs(a.features["image"]).sum(axis=-1)
            image_share[how].append(heat[ink].sum() / heat.sum())
            near_share[how].append(heat[near].sum() / heat.sum())
    # Shapley values: clean, then each modality corrupted at test time.
    clean = modality_shapley(model, x)
    noisy, _ = batch(tests["noisier audio 2"], pre, rows)
    shuffled = {**x, "image": x["image"][np.roll(np.arange(len(rows)), 1)]}  # each row gets its neighbour's image
    corrupted = {"audio at -12 dB": modality_shapley(model, noisy, targets=clean.targets),
                 "another row's image": modality_shapley(model, shuffled, targets=clean.targets)}

    print(f"\nAV-digits, test speaker {args.speaker}, {len(rows)} rows, images keeping {info['pca_energy']:.0%} of their "
          f"PCA energy ({time.time() - start:.0f} s)")
    print(f"audio: {np.mean(audio_share):.1%} of the attribution mass in the spoken frames, which are "
          f"{np.mean(audio_chance):.1%} of the frames (rows above chance: "
          f"{np.mean(np.array(audio_share) > np.array(audio_chance)):.0%})")
    for how, shares in image_share.items():
        print(f"image ({how} baseline): {np.mean(shares):.1%} of the mass on the digit's ink, which is "
              f"{np.mean(image_chance):.1%} of the pixels (rows above chance: "
              f"{np.mean(np.array(shares) > np.array(image_chance)):.0%})")
        print(f"image ({how} baseline): {np.mean(near_share[how]):.1%} on the ink and the 2 pixels around its strokes, "
              f"which are {np.mean(near_chance):.1%} of the pixels")
    print(f"{'modality Shapley values (mean)':<34}{'image':>8}{'audio':>8}")
    for name, values in (("clean", clean), *corrupted.items()):
        mean = values.mean()
        print(f"{name:<34}{mean['image']:>8.3f}{mean['audio']:>8.3f}")


if __name__ == "__main__":
    main()
