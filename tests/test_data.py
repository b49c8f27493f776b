"""mbm_keras.data: manifests of real files -> batches, with errors that name the row."""

import json
import os
import re
import wave

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mbm_keras import build_fusion_model
from mbm_keras.data import (
    DataError,
    Preprocessor,
    TextTokenizer,
    fit_preprocessor,
    make_dataset,
    read_manifest,
    split_manifest,
)

COLUMNS = {"image": "img", "text": "caption", "audio": "wav", "tabular": {"numeric": ["age"], "categorical": ["city"]}, "label": "label"}
OPTIONS = dict(image_size=(16, 16), text_length=6, sample_rate=8000, audio_length=800, max_tokens=100)


def write_wav(path, samples, rate=8000, channels=1):
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(data.tobytes())


def write_image(path, rgb, size=(20, 30), fmt=None):
    Image.fromarray(np.full((*size, 3), rgb, np.uint8)).save(str(path), format=fmt)


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def make_files(folder, n=24, seed=0):
    """n rows: label "red"/"blue" shown by image colour, text, audio pitch."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(exist_ok=True)
    (folder / "wav").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        label = ("red", "blue")[i % 2]
        write_image(folder / "img" / f"{i}.png", (220, 30, 30) if label == "red" else (30, 30, 220))
        t = np.arange(800) / 8000
        write_wav(folder / "wav" / f"{i}.wav", 0.5 * np.sin(2 * np.pi * (300 if label == "red" else 1500) * t))
        rows.append({
            "img": f"img/{i}.png",
            "caption": f"a {'crimson' if label == 'red' else 'azure'} thing number {i}",
            "wav": f"wav/{i}.wav",
            "age": str(20 + rng.integers(0, 40)),
            "city": ("paris", "lima", "oslo")[i % 3],
            "label": label,
            "speaker": f"s{i % 6}",
        })
    return rows


@pytest.fixture
def files(tmp_path):
    rows = make_files(tmp_path)
    return tmp_path, rows, write_csv(tmp_path / "train.csv", rows)


def batches(ds):
    return [(x, y) for x, y in ds.as_numpy_iterator()]


# --- manifests ---

def test_csv_jsonl_and_parquet_give_the_same_batches(files):
    folder, rows, csv_path = files
    pre = fit_preprocessor(csv_path, COLUMNS, **OPTIONS)
    jsonl = folder / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(folder / "train.parquet"))
    reference = batches(make_dataset(csv_path, preprocessor=pre, batch_size=8))
    for path in (jsonl, folder / "train.parquet"):
        other = batches(make_dataset(str(path), preprocessor=pre, batch_size=8))
        for (xa, ya), (xb, yb) in zip(reference, other):
            np.testing.assert_array_equal(ya, yb)
            for k in xa:
                np.testing.assert_array_equal(xa[k], xb[k])


def test_batches_match_the_model_inputs(files):
    _, _, csv_path = files
    pre = fit_preprocessor(csv_path, COLUMNS, **OPTIONS)
    x, y = next(iter(make_dataset(csv_path, preprocessor=pre, batch_size=8)))
    assert x["image"].shape == (8, 16, 16, 3) and x["image"].dtype == tf.float32
    assert float(tf.reduce_max(x["image"])) > 200  # RGB in [0, 255]
    assert x["text"].shape == (8, 6) and x["text"].dtype == tf.int32
    assert x["audio"].shape == (8, 800) and float(tf.reduce_max(tf.abs(x["audio"]))) <= 1.0
    assert x["tabular"].shape == (8, 1 + 4)  # age + one-hot(3 cities + unknown)
    assert y.dtype == tf.int32 and set(y.numpy()) == {0, 1}
    model = build_fusion_model(image="small_cnn", text="cnn", audio="logmel_cnn", tabular="mlp", **pre.model_kwargs())
    assert model.predict(x, verbose=0).shape == (8, 2)


def test_learns_from_files(files):
    _, _, csv_path = files
    pre = fit_preprocessor(csv_path, {"image": "img", "label": "label"}, image_size=(16, 16))
    train = make_dataset(csv_path, preprocessor=pre, training=True, batch_size=8)
    model = build_fusion_model(image="small_cnn", learning_rate=1e-2, **pre.model_kwargs())
    model.fit(train, epochs=15, verbose=0)
    _, acc = model.evaluate(make_dataset(csv_path, preprocessor=pre, batch_size=8), verbose=0)
    assert acc >= 0.9


def test_unknown_column_and_bad_manifest(files, tmp_path):
    _, _, csv_path = files
    with pytest.raises(DataError, match=r"no column 'picture'.*img, caption"):
        fit_preprocessor(csv_path, {"image": "picture", "label": "label"})
    with pytest.raises(ValueError, match=r"Unknown key\(s\) in columns: \['video'\]"):
        fit_preprocessor(csv_path, {"video": "img"})
    with pytest.raises(FileNotFoundError, match="Manifest not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 2: not valid JSON"):
        read_manifest(tmp_path / "bad.jsonl")


def test_paths_outside_the_data_root_are_refused(files, tmp_path_factory):
    folder, rows, _ = files
    outside = tmp_path_factory.mktemp("elsewhere")
    write_image(outside / "x.png", (1, 2, 3))
    rows = [dict(r) for r in rows]
    rows[3]["img"] = os.path.relpath(outside / "x.png", folder)
    path = write_csv(folder / "escape.csv", rows)
    pre = fit_preprocessor(path, {"image": "img", "label": "label"}, image_size=(16, 16))
    with pytest.raises(DataError, match=r"escape.csv row 4, column 'img'.*outside the data root"):
        make_dataset(path, preprocessor=pre)
    assert make_dataset(path, preprocessor=pre, allow_outside_root=True).report["kept"] == len(rows)


def test_a_symlinked_folder_out_of_the_root_is_refused(files, tmp_path_factory):
    folder, rows, _ = files
    outside = tmp_path_factory.mktemp("elsewhere")
    write_image(outside / "x.png", (1, 2, 3))
    os.symlink(outside, folder / "linked")
    rows = [dict(r) for r in rows]
    rows[2]["img"] = "linked/x.png"
    path = write_csv(folder / "linked.csv", rows)
    pre = fit_preprocessor(path, {"image": "img", "label": "label"}, image_size=(16, 16))
    with pytest.raises(DataError, match=r"linked.csv row 3, column 'img'.*outside the data root"):
        make_dataset(path, preprocessor=pre)


def test_csv_read_by_column_equals_the_csv_module(tmp_path):
    from mbm_keras.data.manifest import _clean, _read_rows

    path = tmp_path / "m.csv"
    path.write_bytes('\ufeffimage,text,label\na.png,"two\nlines, and a comma",cat\n  ,  ,dog\nb.png,\u4e00\u53ea\u732b,cat\n'
                     .encode("utf-8"))
    manifest = read_manifest(path)
    assert manifest._rows is None  # read by column (pyarrow)
    columns, rows = _read_rows(str(path), ".csv")
    assert manifest.columns == columns
    assert manifest.rows == [{c: _clean(r[c]) for c in columns} for r in rows]
    assert list(manifest.column("image")) == ["a.png", None, "b.png"]
    assert manifest.subset([2, 0]).rows == [manifest.rows[2], manifest.rows[0]]
    # A ragged row falls back to the csv module, which names it.
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"ragged.csv row 2: more cells than the header's 2 columns"):
        read_manifest(tmp_path / "ragged.csv")


def test_check_data_lists_every_problem_up_front(files, tmp_path, capsys):
    from mbm_keras.cli import main
    from mbm_keras.data import check_data

    folder, rows, _ = files
    rows = [dict(r) for r in rows]
    (folder / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    rows[1]["img"] = "img/missing.png"
    rows[4]["img"] = "img/corrupt.png"
    rows[6]["label"] = "green"
    path = write_csv(folder / "bad.csv", rows)
    good = write_csv(folder / "good.csv", make_files(folder))
    pre = fit_preprocessor(good, COLUMNS, **OPTIONS)
    report = check_data(path, pre, progress=False, verbose=False)
    assert (report["rows"], report["usable"], report["problems"]) == (24, 21, 3)
    assert "row 2, column 'img'" in report["errors"][0] and "missing.png): file not found" in report["errors"][0]
    assert "row 5, column 'img'" in report["errors"][1] and "cannot decode the image file" in report["errors"][1]
    assert "row 7, column 'label': label 'green' is not in the training vocabulary" in report["errors"][2]
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"data": {"train": str(good), "columns": COLUMNS, "preprocessing": OPTIONS}}))
    assert main(["check-data", "--data", str(path), "--config", str(config), "--quiet",
                 "--out", str(tmp_path / "p.json")]) == 1
    assert json.loads((tmp_path / "p.json").read_text())["errors"] == report["errors"]
    assert "21 of 24 rows usable, 3 problem(s)" in capsys.readouterr().err
    assert main(["check-data", "--data", str(good), "--config", str(config), "--quiet"]) == 0


# --- labels and splits ---

def test_label_kinds(tmp_path):
    rows = make_files(tmp_path, n=6)
    for r, ints, multi, value in zip(rows, ["10", "2", "2", "10", "1", "1"], ["a|b", "b", "c", "c|a", "a", "b"], range(6)):
        r.update(int_label=ints, tags=multi, score=str(value * 0.5))
    path = write_csv(tmp_path / "m.csv", rows)
    pre = fit_preprocessor(path, {"tabular": ["age"], "label": "int_label"})
    assert pre.labels.classes == ["1", "2", "10"]  # integers sort numerically
    pre = fit_preprocessor(path, {"tabular": ["age"], "label": "tags"}, label_type="multi")
    _, y = next(iter(make_dataset(path, preprocessor=pre, batch_size=6)))
    np.testing.assert_array_equal(y.numpy()[0], [1, 1, 0])
    assert pre.model_kwargs()["head"] == "sigmoid" and pre.model_kwargs()["num_classes"] == 3
    pre = fit_preprocessor(path, {"tabular": ["age"], "label": "score"}, label_type="regression")
    _, y = next(iter(make_dataset(path, preprocessor=pre, batch_size=6)))
    np.testing.assert_allclose(y.numpy()[:, 0], np.arange(6) * 0.5)
    assert pre.model_kwargs()["head"] == "linear"


def test_label_vocabulary_comes_from_training_only(files):
    folder, rows, csv_path = files
    pre = fit_preprocessor(csv_path, {"text": "caption", "label": "label"}, text_length=6)
    val_rows = [dict(r) for r in rows[:4]]
    val_rows[2]["label"] = "green"
    val = write_csv(folder / "val.csv", val_rows)
    with pytest.raises(DataError, match=r"val.csv row 3, column 'label': label 'green' is not in the training vocabulary"):
        make_dataset(val, preprocessor=pre)


def test_split_is_stratified_grouped_and_seeded(files):
    folder, rows, csv_path = files
    splits = split_manifest(csv_path, (0.5, 0.25, 0.25), stratify="label", seed=3)
    for part in splits.values():
        labels = [r["label"] for r in part.rows]
        assert labels.count("red") == labels.count("blue")
    assert sum(len(p) for p in splits.values()) == len(rows)
    grouped = split_manifest(csv_path, (0.5, 0.25, 0.25), group="speaker", seed=3)
    speakers = {k: {r["speaker"] for r in p.rows} for k, p in grouped.items()}
    assert not (speakers["train"] & speakers["val"]) and not (speakers["train"] & speakers["test"])
    assert not (speakers["val"] & speakers["test"])
    again = split_manifest(csv_path, (0.5, 0.25, 0.25), group="speaker", seed=3)
    assert [r["img"] for r in again["test"].rows] == [r["img"] for r in grouped["test"].rows]
    paths = split_manifest(csv_path, stratify="label", out_dir=folder / "splits")
    moved = read_manifest(paths["train"])
    assert os.path.isfile(os.path.join(moved.root, moved.rows[0]["img"]))  # paths rewritten


# --- modalities ---

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF"])
def test_image_formats(tmp_path, fmt):
    write_image(tmp_path / f"x.{fmt.lower()}", (200, 40, 40), fmt=fmt)
    write_image(tmp_path / f"y.{fmt.lower()}", (40, 40, 200), fmt=fmt)
    path = write_csv(tmp_path / "m.csv", [{"img": f"x.{fmt.lower()}", "label": "r"}, {"img": f"y.{fmt.lower()}", "label": "b"}])
    pre = fit_preprocessor(path, {"image": "img", "label": "label"}, image_size=(8, 8))
    x, _ = next(iter(make_dataset(path, preprocessor=pre)))
    assert x["image"].shape == (2, 8, 8, 3)
    red = x["image"].numpy()[0].mean(axis=(0, 1))
    assert red[0] > 150 and red[2] < 90


def test_resize_modes_keep_or_ignore_aspect(tmp_path):
    write_image(tmp_path / "wide.png", (255, 255, 255), size=(10, 40))
    path = write_csv(tmp_path / "m.csv", [{"img": "wide.png", "label": "a"}, {"img": "wide.png", "label": "b"}])
    out = {}
    for mode in ("stretch", "crop", "pad"):
        pre = fit_preprocessor(path, {"image": "img", "label": "label"}, image_size=(20, 20), resize=mode)
        out[mode] = next(iter(make_dataset(path, preprocessor=pre)))[0]["image"].numpy()[0, :, :, 0]
    assert out["stretch"].min() > 250 and out["crop"].min() > 250
    assert out["pad"][0].max() == 0 and out["pad"][10].min() > 250  # black bars above and below


def test_augmentation_only_in_training_and_seeded(files):
    _, _, csv_path = files
    pre = fit_preprocessor(csv_path, {"image": "img", "label": "label"}, image_size=(16, 16))
    plain = make_dataset(csv_path, preprocessor=pre, batch_size=24)
    a = next(iter(plain))[0]["image"].numpy()
    np.testing.assert_array_equal(a, next(iter(make_dataset(csv_path, preprocessor=pre, batch_size=24, augment=True)))[0]["image"].numpy())
    train = make_dataset(csv_path, preprocessor=pre, batch_size=24, training=True, augment=True, shuffle=False, seed=1)
    e1, e2 = (next(iter(train))[0]["image"].numpy() for _ in range(2))
    assert not np.array_equal(e1, a) and not np.array_equal(e1, e2)  # augmented, differently each epoch
    again = make_dataset(csv_path, preprocessor=pre, batch_size=24, training=True, augment=True, shuffle=False, seed=1)
    np.testing.assert_array_equal(next(iter(again))[0]["image"].numpy(), e1)  # same seed, same run


def test_each_epoch_is_a_function_of_seed_and_epoch(files):
    # Order and random draws of epoch e do not depend on how often the dataset
    # was iterated before: Keras' fit under a tf.distribute strategy takes one
    # batch before training, and a resumed run starts at epoch k.
    _, _, csv_path = files
    pre = fit_preprocessor(csv_path, {"image": "img", "text": "caption", "label": "label"}, image_size=(16, 16))
    kwargs = dict(preprocessor=pre, batch_size=8, training=True, augment=True, seed=5)
    ds = make_dataset(csv_path, **kwargs)
    epochs = [batches(ds) for _ in range(3)]
    assert not np.array_equal(epochs[0][0][1], epochs[1][0][1])  # reshuffled
    other = make_dataset(csv_path, **kwargs)
    next(iter(other))  # an extra pass started, as fit does
    other.set_epoch(0)
    for epoch in (0, 1):
        for (x, y), (x2, y2) in zip(epochs[epoch], batches(other)):
            np.testing.assert_array_equal(y, y2)
            np.testing.assert_array_equal(x["image"], x2["image"])
    resumed = make_dataset(csv_path, initial_epoch=2, **kwargs)
    for (x, y), (x2, y2) in zip(epochs[2], batches(resumed)):
        np.testing.assert_array_equal(x["text"], x2["text"])
        np.testing.assert_array_equal(x["image"], x2["image"])


@pytest.mark.parametrize("kind", ["word", "character", "wordpiece"])
def test_chinese_text_gets_several_tokens(kind, tmp_path):
    captions = ["一只黑猫坐在垫子上", "小狗在公园里跑", "我们今天吃饭了", "天气很好 sunny day"]
    path = write_csv(tmp_path / "m.csv", [{"caption": c, "label": str(i % 2)} for i, c in enumerate(captions)])
    pre = fit_preprocessor(path, {"text": "caption", "label": "label"}, text_tokenizer=kind, text_length=12, max_tokens=200)
    ids = next(iter(make_dataset(path, preprocessor=pre)))[0]["text"].numpy()
    assert all((row > 1).sum() > 3 for row in ids)  # several known tokens per sentence
    pre.save(tmp_path / "pre")
    again = Preprocessor.load(tmp_path / "pre")
    np.testing.assert_array_equal(next(iter(make_dataset(path, preprocessor=again)))[0]["text"].numpy(), ids)


def test_tokenizer_pads_truncates_and_marks_unknown_words():
    tok = TextTokenizer("word", length=4).fit(["the cat sat", "the dog ran"])
    ids = tok(tf.constant(["the cat", "the zebra sat on the mat"])).numpy()
    assert ids[0, 2:].tolist() == [0, 0] and ids[1, 1] == 1 and ids.shape == (2, 4)


def test_audio_is_mono_resampled_and_fixed_length(tmp_path):
    import soundfile

    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    write_wav(tmp_path / "stereo16k.wav", np.stack([tone, tone], axis=1).reshape(-1), rate=16000, channels=2)
    soundfile.write(str(tmp_path / "short.flac"), tone[:4000].astype("float32"), 16000)
    soundfile.write(str(tmp_path / "tone.ogg"), tone.astype("float32"), 16000, format="OGG", subtype="VORBIS")
    path = write_csv(
        tmp_path / "m.csv",
        [{"wav": "stereo16k.wav", "label": "a"}, {"wav": "short.flac", "label": "b"}, {"wav": "tone.ogg", "label": "a"}],
    )
    pre = fit_preprocessor(path, {"audio": "wav", "label": "label"}, sample_rate=8000, audio_length=4000)
    audio = next(iter(make_dataset(path, preprocessor=pre)))[0]["audio"].numpy()
    assert audio.shape == (3, 4000)
    for i in (0, 2):  # WAV and OGG: still 440 Hz after 16k -> 8k
        spectrum = np.abs(np.fft.rfft(audio[i]))
        assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) <= 2
    assert np.abs(audio[1, :1900]).max() > 0.4 and np.abs(audio[1, 2001:]).max() == 0  # 0.25 s padded to 0.5 s
    crops = make_dataset(path, preprocessor=pre, training=True, shuffle=False)
    assert not np.array_equal(next(iter(crops))[0]["audio"].numpy()[0], next(iter(crops))[0]["audio"].numpy()[0])


def test_tabular_statistics_come_from_training(files):
    folder, rows, csv_path = files
    pre = fit_preprocessor(csv_path, {"tabular": COLUMNS["tabular"], "label": "label"})
    x, _ = next(iter(make_dataset(csv_path, preprocessor=pre, batch_size=24)))
    age = x["tabular"].numpy()[:, 0]
    assert abs(age.mean()) < 1e-5 and abs(age.std() - 1) < 1e-4
    val = write_csv(folder / "val.csv", [dict(rows[0], city="tokyo"), dict(rows[1], age="abc")])
    with pytest.raises(DataError, match=r"val.csv row 2, column 'age'.*'abc' is not a number"):
        make_dataset(val, preprocessor=pre)
    ok = make_dataset(val, preprocessor=pre, on_error="skip", verbose=False)
    x, _ = next(iter(ok))
    assert x["tabular"].numpy()[0, 1:].tolist() == [0, 0, 0, 1]  # unseen city -> unknown slot


# --- missing modalities ---

def test_empty_cells_are_absent_modalities_with_masks(files):
    folder, rows, _ = files
    rows = [dict(r) for r in rows]
    rows[0]["wav"] = ""
    rows[1]["caption"] = ""
    path = write_csv(folder / "gaps.csv", rows)
    pre = fit_preprocessor(path, {"text": "caption", "audio": "wav", "label": "label"}, **OPTIONS)
    with pytest.raises(DataError, match=r"gaps.csv row 1, column 'wav': empty audio cell"):
        make_dataset(path, preprocessor=pre)
    x, _ = next(iter(make_dataset(path, preprocessor=pre, missing_modalities=True, batch_size=24)))
    assert x["audio_mask"].numpy()[:3, 0].tolist() == [0, 1, 1] and x["text_mask"].numpy()[:3, 0].tolist() == [1, 0, 1]
    assert np.abs(x["audio"].numpy()[0]).max() == 0 and (x["text"].numpy()[1] == 0).all()

    model = build_fusion_model(text="cnn", audio="logmel_cnn", missing_modalities=True, **pre.model_kwargs())
    assert {"text_mask", "audio_mask"} <= set(model.input)
    # An absent modality contributes the learned embedding, whatever its input holds.
    probe = {k: v.numpy()[:1] for k, v in x.items()}
    noisy = dict(probe, audio=np.random.default_rng(0).uniform(-1, 1, probe["audio"].shape).astype("float32"))
    np.testing.assert_allclose(model.predict(probe, verbose=0), model.predict(noisy, verbose=0), atol=1e-6)
    model.fit(make_dataset(path, preprocessor=pre, missing_modalities=True, training=True, batch_size=8), epochs=1, verbose=0)


def test_modality_dropout_hides_modalities_but_never_all(files):
    _, _, csv_path = files
    pre = fit_preprocessor(csv_path, {"text": "caption", "audio": "wav", "label": "label"}, **OPTIONS)
    ds = make_dataset(csv_path, preprocessor=pre, missing_modalities=True, training=True, modality_dropout=0.4, batch_size=24)
    masks = np.concatenate([np.concatenate([x["text_mask"], x["audio_mask"]], axis=1) for _ in range(10) for x, _ in ds.as_numpy_iterator()])
    assert masks.sum(axis=1).min() >= 1
    assert 0.15 < 1 - masks.mean() < 0.45
    val = make_dataset(csv_path, preprocessor=pre, missing_modalities=True, modality_dropout=0.4)
    assert all(x["audio_mask"].min() == 1 for x, _ in val.as_numpy_iterator())  # only in training


# --- bad input ---

def test_bad_rows_raise_naming_row_column_and_file(files):
    folder, rows, _ = files
    rows = [dict(r) for r in rows]
    (folder / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (folder / "wav" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (folder / "img" / "text.png").write_text("hello")
    rows[2]["img"] = "img/missing.png"
    rows[4]["img"] = "img/corrupt.png"
    rows[6]["wav"] = "wav/corrupt.wav"
    rows[8]["img"] = "img/text.png"
    path = write_csv(folder / "bad.csv", rows)
    pre = fit_preprocessor(write_csv(folder / "good.csv", make_files(folder)), COLUMNS, **OPTIONS)
    # verify="decode": every problem before the first batch.
    with pytest.raises(DataError, match=r"bad.csv row 3, column 'img' \(.*missing.png\): file not found \(and 3 more"):
        make_dataset(path, preprocessor=pre, verify="decode")
    # The default (verify="none"): found while streaming, with the same words.
    ds = make_dataset(path, preprocessor=pre, batch_size=4)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(ds)
    from mbm_keras.codecs.asserts import explain

    assert re.match(r"make_dataset: .*bad.csv row 3, column 'img' \(.*missing.png\): file not found "
                    r"\(on_error='skip' drops such rows", explain(info.value)), explain(info.value)
    for verify in ("decode", "none"):
        ds = make_dataset(path, preprocessor=pre, on_error="skip", verbose=False, verify=verify)
        seen = sum(len(y) for _, y in ds.as_numpy_iterator())
        # Nothing silently zero-filled, and outside training no row stands in for a failed one (evaluate's
        # metrics count each row read once; training data keeps its length, see test_hardening).
        assert seen == len(rows) - 4, verify
        assert ds.report["skipped"] == 4 and ds.report["kept"] == len(rows) - 4, verify
        text = "\n".join(ds.report["errors"])
        assert "row 3, column 'img'" in text and "missing.png): file not found" in text
        assert "row 5, column 'img'" in text and "corrupt.png): cannot decode the image file" in text
        assert "row 7, column 'wav'" in text and "corrupt.wav)" in text
        assert "row 9, column 'img'" in text and "not a JPEG, PNG, BMP or GIF file" in text


def test_skipped_rows_are_reported_at_the_end_of_each_epoch(files, capfd):
    folder, rows, _ = files
    rows = [dict(r) for r in rows]
    rows[0]["img"] = "img/missing.png"
    path = write_csv(folder / "bad.csv", rows)
    pre = fit_preprocessor(write_csv(folder / "good.csv", make_files(folder)), {"image": "img", "label": "label"}, image_size=(16, 16))
    ds = make_dataset(path, preprocessor=pre, on_error="skip", verbose=False)
    capfd.readouterr()
    for _ in range(2):
        list(ds.as_numpy_iterator())
    assert capfd.readouterr().err.count("1 of 24 rows were skipped") == 2


def test_static_shapes_for_tpu(files):
    _, _, csv_path = files
    pre = fit_preprocessor(csv_path, COLUMNS, **OPTIONS)
    ds = make_dataset(csv_path, preprocessor=pre, batch_size=5, drop_remainder=True, cache="memory")
    spec = ds.element_spec[0]
    assert all(s.shape[0] == 5 and s.shape.is_fully_defined() for s in spec.values())
    assert sum(1 for _ in ds) == 24 // 5


def test_manifest_without_labels_gives_feature_batches(files):
    _, _, csv_path = files
    pre = fit_preprocessor(csv_path, {"text": "caption", "tabular": ["age"]}, text_length=6)
    batch = next(iter(make_dataset(csv_path, preprocessor=pre, batch_size=8)))
    assert isinstance(batch, dict) and batch["text"].shape == (8, 6) and batch["tabular"].shape == (8, 1)
