"""The demo dataset: each class is (color, animal, pitch), one factor per modality.

- image: a red or blue disc on a noisy background (32x32 PNG) -> color
- text: a short sentence naming a cat-like or dog-like animal  -> animal
- audio: a low or high tone in noise (0.25 s WAV at 8 kHz)     -> pitch

Each modality alone can tell only one of the three factors (at best 1/4 of
the 8 classes), and each lies about its factor in `corruption` of the
examples, so only a model that fuses all three can be accurate.

The same examples as a table (the tabular configs' data): `redness` (the
image's mean red minus mean blue), `keyword` (the sentence's animal word) and
`pitch_hz` (the tone's frequency), measured from what each file shows.

Beside them, a toy speech set for transcription (`speech_*.csv`): clips of 3
to 5 sung notes (do, re, mi, ... as tones in noise), the transcript naming
them ("do mi sol"), and a context on three of four rows: three candidate
melodies, one of them the one sung ("do mi sol , re re la , fa si do").
"""

import csv
import os
import shutil
import tempfile
import wave

import numpy as np

DEMO_SPEC = {
    "version": 2,  # 2: tabular columns, train/val/test.csv
    "num_examples": 800,
    "image_shape": (32, 32, 3),
    "text_length": 8,
    "sample_rate": 8000,
    "audio_length": 2000,
    "corruption": 0.05,
    "splits": {"train": 0.7, "val": 0.1, "test": 0.2},
}

COLORS = ("blue", "red")
ANIMALS = ("dog", "cat")
PITCHES = ("low", "high")
CLASS_NAMES = tuple(f"{c}-{a}-{p}" for c in COLORS for a in ANIMALS for p in PITCHES)

_ANIMAL_WORDS = (("dog", "puppy", "hound", "terrier"), ("cat", "kitten", "tabby", "kitty"))
_FILLER = (
    "a the small old quiet happy sleepy brown little big one my our that "
    "sat ran slept waited played near under by on in garden house yard street today"
).split()


def _image(rng, color):
    img = rng.uniform(0, 110, (32, 32, 3))
    cy, cx = rng.uniform(8, 24, 2)
    radius = rng.uniform(5, 9)
    yy, xx = np.mgrid[:32, :32]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    rgb = np.array([200, 50, 50] if color == "red" else [50, 60, 210], float)
    img[disc] = rgb + rng.normal(0, 25, 3)
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _sentence(rng, animal):
    words = list(rng.choice(_FILLER, size=rng.integers(5, 8)))
    keyword = rng.choice(_ANIMAL_WORDS[ANIMALS.index(animal)])
    words.insert(int(rng.integers(0, len(words) + 1)), keyword)
    return " ".join(words), str(keyword)


def _tone(rng, pitch, sample_rate, length):
    freq = rng.uniform(250, 450) if pitch == "low" else rng.uniform(1000, 1600)
    t = np.arange(length) / sample_rate
    wav = rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    wav += rng.normal(0, 0.08, length)
    return np.clip(wav, -1, 1), freq


NOTES = {"do": 262.0, "re": 294.0, "mi": 330.0, "fa": 349.0, "sol": 392.0, "la": 440.0, "si": 494.0}
SPEECH_SPEC = {"num_examples": 480, "sample_rate": 8000, "seconds": 1.0, "splits": {"train": 0.7, "val": 0.1}}


def _melody_clip(rng, notes, sample_rate, length):
    """Notes of 0.12 s (a tone and its octave, a little vibrato) with 30-80 ms gaps, in noise."""
    wav = np.zeros(length)
    start = int(rng.integers(80, 400))
    n = int(0.12 * sample_rate)
    t = np.arange(n) / sample_rate
    for note in notes:
        f = NOTES[note] * rng.uniform(0.98, 1.02)
        tone = np.sin(2 * np.pi * f * t + 0.3 * np.sin(2 * np.pi * 6 * t)) + 0.5 * np.sin(4 * np.pi * f * t)
        wav[start:start + n] = rng.uniform(0.2, 0.4) * tone * np.hanning(n)
        start += n + int(rng.integers(int(0.03 * sample_rate), int(0.08 * sample_rate)))
    return np.clip(wav + rng.normal(0, 0.02, length), -1, 1)


def _write_speech(folder, seed):
    """The toy speech set: `speech/NNNN.wav`, `speech_{train,val,test}.csv` (audio, transcript, context)."""
    spec = SPEECH_SPEC
    rng = np.random.default_rng(seed + 1000)  # its own stream: the other files do not change with it
    os.makedirs(os.path.join(folder, "speech"))
    names = list(NOTES)
    rate, length = spec["sample_rate"], int(spec["seconds"] * spec["sample_rate"])
    rows = []
    for i in range(spec["num_examples"]):
        melody = list(rng.choice(names, int(rng.integers(3, 6))))
        path = f"speech/{i:04d}.wav"
        _write_wav(os.path.join(folder, path), _melody_clip(rng, melody, rate, length), rate)
        candidates = [" ".join(melody)] + [" ".join(rng.choice(names, int(rng.integers(3, 6)))) for _ in range(2)]
        context = " , ".join(candidates[j] for j in rng.permutation(3)) if rng.random() < 0.75 else ""
        rows.append({"audio": path, "transcript": " ".join(melody), "context": context})
    n_train = int(len(rows) * spec["splits"]["train"])
    n_val = int(len(rows) * spec["splits"]["val"])
    for name, part in (("train", rows[:n_train]), ("val", rows[n_train:n_train + n_val]),
                       ("test", rows[n_train + n_val:])):
        with open(os.path.join(folder, f"speech_{name}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["audio", "transcript", "context"])
            writer.writeheader()
            writer.writerows(part)


def _write_wav(path, samples, sample_rate):
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes((samples * 32767).astype("<i2").tobytes())


def _write_png(path, image):
    import tensorflow as tf  # data side only

    tf.io.write_file(path, tf.io.encode_png(image))


def write_demo_dataset(folder, seed=0):
    """Writes the demo dataset into `folder` (created atomically) and returns
    the path of its manifest, `manifest.csv`.

    The manifest has columns `image`, `audio` (paths relative to the manifest),
    `text`, the table columns `redness`, `keyword` and `pitch_hz`, `label` (a
    class name) and `split` (train/val/test); `train.csv`, `val.csv` and
    `test.csv` beside it hold the rows of each split (the configs in the
    repository's `configs/` name them), and `speech_{train,val,test}.csv` a
    toy transcription set (`speech/` clips of sung notes, their transcript and
    a context of candidate melodies). The same seed gives the same files. An
    existing complete dataset is reused.

    Args:
        folder: destination folder.
        seed: random seed.

    Examples:
        >>> manifest = write_demo_dataset("/tmp/mbm_demo")
    """
    manifest = os.path.join(folder, "manifest.csv")
    if os.path.isfile(manifest):
        return manifest
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise FileExistsError(
            f"Demo data folder {os.path.abspath(folder)} exists but holds no demo dataset "
            f"(no manifest.csv); refusing to write into it. Choose another data folder."
        )
    spec = DEMO_SPEC
    rng = np.random.default_rng(seed)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".demo-", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, "images"))
        os.makedirs(os.path.join(tmp, "audio"))
        n = spec["num_examples"]
        order = rng.permutation(n)
        n_train = int(n * spec["splits"]["train"])
        n_val = int(n * spec["splits"]["val"])
        split_of = np.empty(n, dtype=object)
        split_of[order[:n_train]] = "train"
        split_of[order[n_train : n_train + n_val]] = "val"
        split_of[order[n_train + n_val :]] = "test"
        rows = []
        for i in range(n):
            label = int(rng.integers(len(CLASS_NAMES)))
            color, animal, pitch = CLASS_NAMES[label].split("-")

            def shown(value, options):
                # With probability `corruption` a modality shows the other value.
                return options[1 - options.index(value)] if rng.random() < spec["corruption"] else value

            image_path = f"images/{i:04d}.png"
            audio_path = f"audio/{i:04d}.wav"
            image = _image(rng, shown(color, COLORS))
            _write_png(os.path.join(tmp, image_path), image)
            tone, pitch_hz = _tone(rng, shown(pitch, PITCHES), spec["sample_rate"], spec["audio_length"])
            _write_wav(os.path.join(tmp, audio_path), tone, spec["sample_rate"])
            text, keyword = _sentence(rng, shown(animal, ANIMALS))
            redness = image[..., 0].mean() - image[..., 2].mean()
            rows.append(
                {
                    "image": image_path,
                    "text": text,
                    "audio": audio_path,
                    "redness": f"{redness:.1f}",
                    "keyword": keyword,
                    "pitch_hz": f"{pitch_hz:.0f}",
                    "label": CLASS_NAMES[label],
                    "split": split_of[i],
                }
            )
        fields = list(rows[0])
        for name, keep in (("manifest", None), ("train", "train"), ("val", "val"), ("test", "test")):
            with open(os.path.join(tmp, f"{name}.csv"), "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(r for r in rows if keep in (None, r["split"]))
        _write_speech(tmp, seed)
        if os.path.isdir(folder):  # empty, checked above
            os.rmdir(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
