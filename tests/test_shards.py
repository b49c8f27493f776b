"""Sharded storage: `pack` writes TFRecord shards of a manifest's files and cells;
`make_dataset` and `train` read the folder as they read the manifest."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from mbm_keras.cli import main
from mbm_keras.data import DataError, fit_preprocessor, make_dataset, read_manifest, write_manifest
from mbm_keras.data.shards import INDEX, pack, read_index
from mbm_keras.demo import write_demo_dataset
from mbm_keras.codecs.asserts import explain

COLUMNS = {"image": "image", "text": "text", "audio": "audio", "label": "label"}
OPTIONS = dict(image_size=(16, 16), text_length=6, sample_rate=8000, audio_length=800)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    manifest = read_manifest(write_demo_dataset(str(root / "demo"), seed=0)).subset(range(120))
    path = write_manifest(manifest, str(root / "demo" / "small.csv"))
    index = pack(path, str(root / "shards"), shard_mb=0.02, progress=False)
    pre = fit_preprocessor(path, COLUMNS, **OPTIONS)
    return root, path, index, pre


def _batches(ds):
    return list(ds.as_numpy_iterator())


def test_shards_give_the_manifests_batches(packed):
    root, path, index, pre = packed
    assert index["rows"] == 120 and len(index["shards"]) > 4 and index["file_columns"] == ["image", "audio"]
    assert sorted(os.listdir(root / "shards")) == sorted([s["file"] for s in index["shards"]] + [INDEX])
    # Unshuffled: the same batches, value for value.
    a = _batches(make_dataset(path, preprocessor=pre, batch_size=32))
    b = _batches(make_dataset(str(root / "shards"), preprocessor=pre, batch_size=32))
    assert len(a) == len(b) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        for k in xa:
            np.testing.assert_allclose(xa[k], xb[k], err_msg=k)
    # Training: shards and records shuffled per (seed, epoch), every row once per epoch.
    ds = make_dataset(str(root / "shards"), preprocessor=pre, batch_size=32, training=True, seed=3)
    first = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    second = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert sorted(first) == sorted(second) == sorted(np.concatenate([y for _, y in a]))
    assert (first != second).any()
    again = make_dataset(str(root / "shards"), preprocessor=pre, batch_size=32, training=True, seed=3)
    np.testing.assert_array_equal(np.concatenate([y for _, y in again.as_numpy_iterator()]), first)
    # The preprocessing fits on the shard folder as on the manifest.
    fitted = fit_preprocessor(str(root / "shards"), COLUMNS, **OPTIONS)
    assert fitted.labels.classes == pre.labels.classes and fitted.tokenizer.vocabulary == pre.tokenizer.vocabulary


def _fingerprints(ds):
    return [x["image"][i].tobytes() + bytes([int(y[i])]) for x, y in ds.as_numpy_iterator() for i in range(len(y))]


def test_workers_read_disjoint_shards_whose_union_is_the_dataset(packed, tmp_path, capsys):
    root, path, index, pre = packed
    equal = pack(path, str(tmp_path / "equal"), shard_rows=10, progress=False)
    assert [s["rows"] for s in equal["shards"]] == [10] * 12
    options = dict(preprocessor=pre, batch_size=10, training=True, seed=5)
    whole = make_dataset(str(tmp_path / "equal"), **options)
    parts = [make_dataset(str(tmp_path / "equal"), **options, workers=(i, 2)) for i in range(2)]
    assert "each of 2 workers reads its own shards, 12 steps of 5 rows per epoch" in capsys.readouterr().err
    for epoch in range(2):  # the shards change hands each epoch; every row is read once
        everything = _fingerprints(whole)
        seen = [_fingerprints(part) for part in parts]
        assert [len(s) for s in seen] == [60, 60] and int(parts[0].cardinality()) == 12
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == sorted(everything)
        if epoch == 0:
            first = seen[0]
    assert set(seen[0]) != set(first)
    # Unequal shards (17 of 7 rows, 1 of 1): equal steps still (the fewest rows a worker can get, 57, in batches
    # of 5), and the rows that do not fit are said.
    pack(path, str(tmp_path / "uneven"), shard_rows=7, progress=False)
    uneven = [make_dataset(str(tmp_path / "uneven"), **options, workers=(i, 2)) for i in range(2)]
    assert "11 steps of 5 rows per epoch; 10 of 120 rows are left out of each epoch (other ones each epoch)" in \
        capsys.readouterr().err
    seen = [_fingerprints(part) for part in uneven]
    assert len(seen[0]) == len(seen[1]) == 55 and not set(seen[0]) & set(seen[1])
    with pytest.raises(ValueError, match="batch_size=9 must divide evenly over 2 workers"):
        make_dataset(str(root / "shards"), **{**options, "batch_size": 9}, workers=(0, 2))
    with pytest.raises(ValueError, match="on_error='skip' with 2 workers: a worker that skips a row would take fewer"):
        make_dataset(str(root / "shards"), **options, on_error="skip", workers=(0, 2))
    with pytest.raises(DataError, match=r"cannot give each of 2 workers a batch of 64 rows; pack again .*--shard-rows"):
        make_dataset(str(root / "shards"), **{**options, "batch_size": 128}, workers=(0, 2))
    with pytest.raises(ValueError, match="is for a shard folder"):
        make_dataset(path, **options, workers=(0, 2))


def test_train_reads_a_shard_folder(packed, tmp_path):
    from mbm_keras.training import train

    root, path, index, pre = packed
    config = {"data": {"train": str(root / "shards"), "columns": COLUMNS, "preprocessing": dict(OPTIONS),
                       "batch_size": 32},
              "model": {"image": "small_cnn", "text": "cnn", "audio": "logmel_cnn"},
              "train": {"epochs": 1, "balance": "none"}, "output": str(tmp_path / "run")}
    result = train(config, verbose=0)
    assert len(result["history"]["loss"]) == 1 and np.isfinite(result["history"]["loss"][0])


def test_a_truncated_shard_is_named_or_its_intact_records_kept(packed, tmp_path):
    root, path, index, pre = packed
    folder = tmp_path / "cut"
    os.makedirs(folder)
    for name in os.listdir(root / "shards"):
        (folder / name).write_bytes((root / "shards" / name).read_bytes())
    shard = index["shards"][1]
    data = (folder / shard["file"]).read_bytes()
    (folder / shard["file"]).write_bytes(data[: len(data) - 200])  # the last record cut
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _batches(make_dataset(str(folder), preprocessor=pre, batch_size=32))
    assert re.search(rf"{shard['file']}: truncated or damaged: {shard['rows'] - 1} of its {shard['rows']} records",
                     explain(info.value)), explain(info.value)
    ds = make_dataset(str(folder), preprocessor=pre, batch_size=32, on_error="skip", verbose=False)
    assert sum(len(y) for _, y in ds.as_numpy_iterator()) == 119
    assert ds.report["skipped"] == 1 and ds.report["kept"] == 119


def test_a_corrupt_file_in_a_shard_is_named_with_its_row(packed, tmp_path):
    root, path, index, pre = packed
    manifest = read_manifest(path).subset(range(20))
    rows = manifest.rows
    (root / "demo" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    rows[5]["image"] = "broken.png"
    bad = write_manifest(manifest, str(root / "demo" / "broken.csv"))
    pack(bad, str(tmp_path / "s"), progress=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _batches(make_dataset(str(tmp_path / "s"), preprocessor=pre, batch_size=8))
    assert re.search(r"s row 6 \(shard-00000.tfrecord\): the record cannot be used", explain(info.value))
    ds = make_dataset(str(tmp_path / "s"), preprocessor=pre, batch_size=8, on_error="skip", verbose=False)
    assert sum(len(y) for _, y in ds.as_numpy_iterator()) == 19 and ds.report["skipped"] == 1
    assert re.search(r"s row 6 \(shard-00000.tfrecord\), column 'image': cannot decode the image",
                     ds.report["errors"][0]), ds.report["errors"]


def test_shards_that_disagree_with_the_preprocessor_and_unfinished_packs(packed, tmp_path):
    root, path, index, pre = packed
    renamed = read_manifest(path).subset(range(40))
    for row in renamed.rows:
        row["caption"] = row["text"]
    renamed.columns.append("caption")
    captions = fit_preprocessor(write_manifest(renamed, str(tmp_path / "captions.csv"), path_columns=["image", "audio"]),
                                {"text": "caption", "label": "label"})
    with pytest.raises(DataError, match=r"shards: the shards have no column 'caption' \(the preprocessor reads "
                                        r"caption, label; the shards hold image, text, audio, redness, keyword, pitch_hz, label, split\)"):
        make_dataset(str(root / "shards"), preprocessor=captions)
    bad_columns = fit_preprocessor(path, {"text": "image", "label": "label"})  # a file column read as text
    with pytest.raises(DataError, match=r"column 'image' is packed as file bytes, but the preprocessor reads it as a "
                                        r"text cell"):
        make_dataset(str(root / "shards"), preprocessor=bad_columns)
    # A pack that fails half way (a missing file) publishes no index: the folder is refused.
    manifest = read_manifest(path).subset(range(30))
    manifest.rows[25]["audio"] = "audio/missing.wav"
    broken = write_manifest(manifest, str(root / "demo" / "missing.csv"), path_columns=["image", "audio"])
    with pytest.raises(DataError, match=r"missing.csv row 26, column 'audio' \(.*missing.wav\): file not found"):
        pack(broken, str(tmp_path / "half"), shard_mb=0.01, file_columns=["image", "audio"], progress=False)
    assert not (tmp_path / "half" / INDEX).exists()
    assert all(n.startswith("shard-") or n.startswith(".") for n in os.listdir(tmp_path / "half"))
    with pytest.raises(DataError, match=r"half: not a shard folder \(no index.json\)"):
        read_index(str(tmp_path / "half"))


def test_pack_and_read_on_a_non_local_file_system(packed, capsys):
    root, path, index, pre = packed
    small = write_manifest(read_manifest(path).subset(range(16)), str(root / "demo" / "ram.csv"))
    assert main(["pack", "--data", small, "--out", "ram://mbm_keras_test/shards", "--quiet"]) == 0
    assert "Packed 16 rows into 1 shard(s) in ram://mbm_keras_test/shards" in capsys.readouterr().out
    assert tf.io.gfile.exists("ram://mbm_keras_test/shards/index.json")
    a = _batches(make_dataset(small, preprocessor=pre, batch_size=16))
    b = _batches(make_dataset("ram://mbm_keras_test/shards", preprocessor=pre, batch_size=16))
    np.testing.assert_allclose(a[0][0]["image"], b[0][0]["image"])
    np.testing.assert_array_equal(a[0][1], b[0][1])


def test_a_remote_path_without_access_gives_the_file_systems_reason_in_one_line(packed, monkeypatch):
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # no wait for a GCE metadata server where the network is open
    root, path, index, pre = packed
    with pytest.raises(DataError) as info:  # no network or credentials here: TensorFlow's reason, with the path
        make_dataset("gs://mbm-keras-no-such-bucket/shards", preprocessor=pre)
    assert str(info.value).startswith("gs://mbm-keras-no-such-bucket/shards/index.json: ") and "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"manifests are read from local files; for shared storage pack"):
        read_manifest("gs://mbm-keras-no-such-bucket/train.csv")
