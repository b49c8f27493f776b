"""Retrieval: two-tower models, the contrastive loss, the vector index and the metrics."""

import os
import re
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from mbm_keras.retrieval import (
    ContrastiveLoss,
    Index,
    IndexFileError,
    build_retrieval_model,
    contrastive_dataset,
    in_batch_accuracy,
    retrieval_metrics,
)

TINY = dict(embedding_dim=8, image_shape=(16, 16, 3), text_length=6, vocab_size=40)


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_two_towers_embed_alone_and_reload_safely(tmp_path):
    model = build_retrieval_model(query={"caption": ("text", "cnn")},
                                  candidate={"photo": ("image", "small_cnn"), "description": ("text", "cnn")}, **TINY)
    rng = np.random.default_rng(0)
    x = {"caption": rng.integers(1, 40, (6, 6)).astype("int32"), "description": rng.integers(1, 40, (6, 6)).astype("int32"),
         "photo": rng.uniform(0, 255, (6, 16, 16, 3)).astype("float32")}
    logits = model.predict(x, verbose=0)
    assert logits.shape == (6, 6)
    query, candidate = model.get_layer("query_tower"), model.get_layer("candidate_tower")
    assert sorted(query.input) == ["caption"] and sorted(candidate.input) == ["description", "photo"]
    q = query.predict({"caption": x["caption"]}, verbose=0)
    c = candidate.predict({"photo": x["photo"], "description": x["description"]}, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, rtol=1e-5)
    scale = float(keras.ops.exp(model.get_layer("similarity").log_scale))
    np.testing.assert_allclose(logits, scale * q @ c.T, rtol=1e-4, atol=1e-4)
    assert abs(scale - 1 / 0.07) < 1e-3
    model.save(tmp_path / "r.keras")
    again = keras.models.load_model(tmp_path / "r.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), logits, rtol=1e-5, atol=1e-5)
    assert again.loss.get_config()["hard_negatives"] is None


def test_shared_towers_and_bad_arguments():
    shared = build_retrieval_model(query={"question": ("text", "cnn")}, candidate={"answer": ("text", "cnn")},
                                   share_towers=True, **TINY)
    apart = build_retrieval_model(query={"question": ("text", "cnn")}, candidate={"answer": ("text", "cnn")}, **TINY)
    one_tower = apart.get_layer("candidate_tower").count_params()
    assert shared.count_params() == one_tower + 1  # one tower's weights, and the temperature
    ids = np.array([[3, 4, 5, 0, 0, 0]], "int32")
    np.testing.assert_allclose(shared.get_layer("query_tower").predict({"question": ids}, verbose=0),
                               shared.get_layer("candidate_tower").predict({"answer": ids}, verbose=0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"Feature name\(s\) \['text'\] appear in both towers"):
        build_retrieval_model(query={"text": ("text", "cnn")}, candidate={"text": ("text", "gru")}, **TINY)
    with pytest.raises(ValueError, match="share_towers=True needs query features with the candidate's modalities"):
        build_retrieval_model(query={"q": ("text", "gru")}, candidate={"c": ("text", "cnn")}, share_towers=True, **TINY)
    with pytest.raises(ValueError, match="embedding_dim must be a positive int"):
        build_retrieval_model(query={"q": ("text", "cnn")}, candidate={"c": ("text", "cnn")}, embedding_dim=0)


def test_contrastive_loss_matches_its_definition():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [0.0, 2.5, 0.2]], np.float32)

    def cross_entropy(rows, targets):
        log_softmax = rows - np.log(np.exp(rows).sum(1, keepdims=True))
        return -(targets * log_softmax).sum(1)

    eye = np.eye(3, dtype=np.float32)
    expected = (cross_entropy(logits, eye) + cross_entropy(logits.T, eye)) / 2
    loss = ContrastiveLoss(reduction=None)
    np.testing.assert_allclose(loss(np.arange(3), logits), expected, rtol=1e-5)
    # Supervised: rows 1 and 2 share a class, so each is the other's positive too.
    same = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1]], np.float32)
    targets = same / same.sum(1, keepdims=True)
    expected = (cross_entropy(logits, targets) + cross_entropy(logits.T, targets)) / 2
    np.testing.assert_allclose(loss(np.array([7, 4, 4]), logits), expected, rtol=1e-5)
    # One hard negative: each row keeps its positive and its best-scoring negative.
    hard = ContrastiveLoss(hard_negatives=1, reduction=None)(np.arange(3), logits)
    keep = lambda m: np.stack([[m[0, 0], m[0, 1]], [m[1, 1], m[1, 2]], [m[2, 2], m[2, 1]]])  # noqa: E731
    two = np.array([[1, 0]] * 3, np.float32)
    expected = (cross_entropy(keep(logits), two) + cross_entropy(keep(logits.T), two)) / 2
    np.testing.assert_allclose(hard, expected, rtol=1e-5)
    np.testing.assert_allclose(in_batch_accuracy(np.arange(3), logits), [1, 1, 0])


def test_contrastive_training_finds_the_paired_item():
    # 12 items; an item's caption is its id as a token, its candidate a noisy code vector: after training,
    # each caption's own candidate ranks first among the 12.
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(12, 6)).astype("float32")
    items = np.repeat(np.arange(12), 16)
    captions = np.stack([[i + 1, 0, 0] for i in items]).astype("int32")
    vectors = codes[items] + rng.normal(scale=0.1, size=(len(items), 6)).astype("float32")
    keras.utils.set_random_seed(0)
    model = build_retrieval_model(query={"caption": ("text", "cnn")}, candidate={"code": ("tabular", "mlp")},
                                  embedding_dim=8, text_length=3, vocab_size=13, tabular_dim=6, learning_rate=3e-3)
    data = tf.data.Dataset.from_tensor_slices(({"caption": captions, "code": vectors}, items)).shuffle(192, seed=0)
    history = model.fit(contrastive_dataset(data.batch(24), supervised=False), epochs=30, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    q = model.get_layer("query_tower").predict({"caption": np.arange(1, 13)[:, None].repeat(3, 1) * [1, 0, 0]}, verbose=0)
    c = model.get_layer("candidate_tower").predict({"code": codes}, verbose=0)
    metrics = retrieval_metrics(q, c)
    assert metrics["recall@1"] >= 0.9 and metrics["mrr"] >= 0.9, metrics


def test_contrastive_dataset_ids_or_labels():
    x = {"a": np.zeros((5, 2), "float32")}
    unlabelled = contrastive_dataset(tf.data.Dataset.from_tensor_slices(x).batch(2))
    assert [list(y) for _, y in unlabelled.as_numpy_iterator()] == [[0, 1], [0, 1], [0]]
    labelled = tf.data.Dataset.from_tensor_slices((x, np.array([3, 3, 1, 2, 2]))).batch(5)
    assert list(next(iter(contrastive_dataset(labelled)))[1].numpy()) == [3, 3, 1, 2, 2]
    assert list(next(iter(contrastive_dataset(labelled, supervised=False)))[1].numpy()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="supervised=True needs labels"):
        contrastive_dataset(tf.data.Dataset.from_tensor_slices(x).batch(2), supervised=True)


def test_metrics_by_hand():
    # Query 0 finds its own candidate second, query 1 first; labels: [a, b] vs candidates [a, b, a].
    q = _unit(np.array([[1.0, 0.0], [0.0, 1.0]]))
    c = _unit(np.array([[0.6, 0.4], [0.0, 1.0], [1.0, 0.0]]))
    m = retrieval_metrics(q, c, np.array([0, 1]), np.array([0, 1, 0]), ks=(1, 2))
    assert m["recall@1"] == 0.5 and m["recall@2"] == 1.0
    assert m["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["map"] == pytest.approx(1.0)  # every query's own-class items come first
    assert m["class_precision@1"] == 1.0 and m["class_precision@2"] == pytest.approx((1 + 0.5) / 2)


def test_index_exact_pq_hnsw_add_save_load(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 16)).astype("float32")
    queries = rng.normal(size=(50, 16)).astype("float32")
    truth = np.argsort(-(_unit(queries) @ _unit(vectors).T), axis=1)[:, :10]
    exact = Index.build(vectors, rows=[{"path": f"img/{i}.png"} for i in range(3000)], model="m1")
    assert exact.method == "exact"
    ids, scores = exact.search(queries, k=10)
    np.testing.assert_array_equal(ids, truth)
    np.testing.assert_allclose(scores[:, 0], np.sort(_unit(queries) @ _unit(vectors).T, axis=1)[:, -1], rtol=1e-5)
    hnsw = Index.build(vectors, kind="hnsw")
    found, _ = hnsw.search(queries, k=10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]) >= 0.95
    # "auto" turns to the product-quantized scan from EXACT_BELOW rows; its scores are exact cosines.
    monkeypatch.setattr("mbm_keras.retrieval.index.EXACT_BELOW", 2000)
    pq = Index.build(vectors)
    assert pq.method == "pq" and pq.approximate
    found, found_scores = pq.search(queries, k=10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]) >= 0.95
    np.testing.assert_allclose(found_scores, np.take_along_axis(_unit(queries) @ _unit(vectors).T, found, axis=1),
                               rtol=1e-5, atol=1e-6)
    pq.settings["rerank"] = 1  # no candidates beyond the k asked for: the codes alone rank, and miss more
    rough, _ = pq.search(queries, k=10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rough, truth)]) < 0.9
    pq.settings["rerank"] = 48
    # Rows added later are found without a rebuild, in every kind, and survive save/load.
    extra = rng.normal(size=(2, 16)).astype("float32")
    for index in (exact, hnsw, pq):
        index.add(extra, rows=[{"path": "new/a.png"}, {"path": "new/b.png"}] if index is exact else None)
        assert list(index.search(extra, k=1)[0][:, 0]) == [3000, 3001]
    path = exact.save(tmp_path / "catalogue.index")
    loaded = Index.load(path, model="m1")
    assert len(loaded) == 3002 and loaded.rows[3001] == {"path": "new/b.png"}
    np.testing.assert_array_equal(loaded.search(queries, k=10)[0], exact.search(queries, k=10)[0])
    for index, name in ((hnsw, "hnsw"), (pq, "pq")):
        index.save(tmp_path / f"{name}.index")
        loaded = Index.load(tmp_path / f"{name}.index")
        assert loaded.method == name
        assert list(loaded.search(extra, k=1)[0][:, 0]) == [3000, 3001]
        np.testing.assert_array_equal(loaded.search(queries, k=10)[0], index.search(queries, k=10)[0])
    with pytest.raises(ValueError, match=r"a 'pq' index .* needs at least 16 of them; it has 5. Use kind='exact'"):
        Index.build(vectors[:5], kind="pq").search(queries, k=3)


def test_index_bad_input(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    index = Index.build(rng.normal(size=(100, 8)), model="m1")
    path = index.save(tmp_path / "a.index")
    with pytest.raises(IndexFileError, match=r"a.index was built by another model \(m1\); this one is m2"):
        Index.load(path, model="m2")
    with pytest.raises(ValueError, match=r"vectors must have shape \(n, 8\). Received: shape \(1, 5\)"):
        index.search(np.ones(5))
    with pytest.raises(ValueError, match="vector 1 is all zeros"):
        index.add(np.stack([np.ones(8), np.zeros(8)]))
    data = path.read_bytes() if hasattr(path, "read_bytes") else open(path, "rb").read()
    truncated = tmp_path / "truncated.index"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match="truncated.index: corrupt or truncated index file"):
        Index.load(truncated)
    # A save that fails half way leaves the previous file as it was, and no temporary file.
    before = open(path, "rb").read()
    bigger = Index.build(rng.normal(size=(200, 8)))
    real = zipfile.ZipFile.writestr

    def fail_on_rows(self, name, *args, **kwargs):
        if name == "rows.json":
            raise OSError("disk full")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail_on_rows)
    with pytest.raises(OSError, match="disk full"):
        bigger.save(path)
    monkeypatch.undo()
    assert open(path, "rb").read() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.index", "truncated.index"]
    with pytest.raises(FileNotFoundError, match="Index not found"):
        Index.load(tmp_path / "nope.index")


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory):
    """One retrieval run (text -> image, red/blue by colour) trained from a config, shared by the tests below."""
    from test_training import run_config

    from mbm_keras.training import train

    folder = tmp_path_factory.mktemp("retrieval")
    path = run_config(folder, task__kind="retrieval", task__query=["text"], task__candidate=["image"],
                      task__embedding_dim=8, train__epochs=12)
    result = train(str(path), verbose=0)
    return folder, path, result


@pytest.mark.slow  # trains the shared run, then exports it (make test runs it)
def test_train_a_retrieval_run_from_a_config(retrieval_run):
    import json

    from mbm_keras.training import ConfigError, load_config

    tmp_path, path, result = retrieval_run
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "retrieval" and summary["rows"] == 8
    assert set(summary["val"]) >= {"recall@1", "recall@10", "mrr", "map", "class_precision@1"}
    assert summary["val"]["map"] == 1.0 and len(result["history"]["loss"]) == 12  # red/blue: colour decides
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    assert list(model.get_layer("query_tower").input) == ["text"]
    assert list(model.get_layer("candidate_tower").input) == ["image"]
    # mbm-keras evaluate on paired rows: the same class-level numbers as summary.json on the same rows (the
    # images of a colour are identical, so instance-level ranks among them are ties), and the recall curve.
    from mbm_keras.evaluate import evaluate, format_report

    results = evaluate(str(out), str(tmp_path / "val.csv"), out=str(tmp_path / "eval.json"))
    for key in ("map", "class_precision@1", "class_precision@5"):
        assert results[key] == pytest.approx(summary["val"][key], abs=1e-6)
    assert results["recall_at_k"]["8"] == 1.0 and os.path.isfile(results["recall_plot"])
    assert "recall@k plot:" in format_report(results)
    config = json.loads(path.read_text())
    for task, message in (
        ({"kind": "search"}, r"task.kind must be one of \('autoencoder', 'classification', 'retrieval', 'transcription'\)"),
        ({"kind": "retrieval", "candidate": ["image"]}, r"needs task.query: the features of its query tower"),
        ({"kind": "retrieval", "query": ["text"], "candidate": ["photo"]},
         r"task.candidate names \['photo'\], which the model has not \(its features: image, text\)"),
        ({"kind": "retrieval", "query": ["image"], "candidate": ["image"]}, r"\['image'\] are in both task.query"),
        ({"query": ["image"]}, r"task.query is for task.kind: retrieval"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config({**config, "task": task})


@pytest.mark.slow
def test_index_and_search_from_the_command_line(retrieval_run, tmp_path, capsys):
    import csv
    import json

    from test_training import run_config

    from mbm_keras.cli import main
    from mbm_keras.training import train

    data = retrieval_run[0]
    run = str(data / "run")
    rows = list(csv.DictReader(open(data / "val.csv")))
    catalogue = data / "catalogue.csv"  # manifests beside the run's files: their paths resolve there
    with open(catalogue, "w", newline="") as f:  # images only: no captions, no labels
        csv.writer(f).writerows([["img"]] + [[r["img"]] for r in rows])
    index = str(tmp_path / "catalogue.index")
    assert main(["index", "--model", run, "--data", str(catalogue), "--out", index, "--quiet"]) == 0
    assert "Index " + index + ": 8 rows, 8 dimensions, exact search" in capsys.readouterr().out
    colour = {r["img"]: r["label"] for r in rows}
    for word, label in (("crimson", "red"), ("azure", "blue")):
        assert main(["search", "--index", index, "--text", f"a {word} thing", "--k", "3"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 3 and lines[0].split()[0] == "1"
        found = [line.split("img=")[1].split()[0] for line in lines]
        assert [colour[p] for p in found] == [label] * 3, lines
    # Rows added later, without a rebuild; embeddings to a file.
    more = data / "more.csv"
    with open(more, "w", newline="") as f:
        csv.writer(f).writerows([["img"], ["img/0.png"], ["img/1.png"]])
    assert main(["index", "--model", run, "--data", str(more), "--out", index, "--add", "--quiet"]) == 0
    assert ": 10 rows" in capsys.readouterr().out
    assert main(["embed", "--model", run, "--data", str(more), "--out", str(tmp_path / "v.npy"), "--quiet"]) == 0
    assert np.load(tmp_path / "v.npy").shape == (2, 8)
    assert json.loads((tmp_path / "v.rows.json").read_text())[1] == {"row": 2, "img": "img/1.png"}
    # Bad input: a missing catalogue file (named, or left out), a query with nothing usable, a foreign index.
    broken = data / "broken.csv"
    with open(broken, "w", newline="") as f:
        csv.writer(f).writerows([["img"], ["img/0.png"], ["img/gone.png"]])

    def fails(argv, message):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err

    fails(["index", "--model", run, "--data", str(broken), "--out", str(tmp_path / "b.index"), "--quiet"],
          r"broken.csv row 2, column 'img' \(.*gone.png\): file not found")
    assert main(["index", "--model", run, "--data", str(broken), "--out", str(tmp_path / "b.index"), "--quiet",
                 "--on-error", "skip"]) == 0
    assert ": 1 rows" in capsys.readouterr().out
    fails(["search", "--index", index], r"A query needs at least one of its features: text \(text\)")
    fails(["search", "--index", index, "--image", str(data / "img" / "0.png")],
          "The query tower has no feature 'image'; it takes text")
    (tmp_path / "cut.index").write_bytes(open(index, "rb").read()[:300])
    fails(["search", "--index", str(tmp_path / "cut.index"), "--text", "a thing"], "corrupt or truncated index file")
    (tmp_path / "other").mkdir()
    other = run_config(tmp_path / "other", task__kind="retrieval", task__query=["text"], task__candidate=["image"],
                       task__embedding_dim=8, train__epochs=1, train__seed=5)
    train(str(other), verbose=0)
    fails(["search", "--index", index, "--model", str(tmp_path / "other" / "run"), "--text", "a thing"],
          "the index was built by another model")


@pytest.mark.slow  # trains the shared run, then exports it (make test runs it)
def test_towers_export_to_saved_model_and_tflite(retrieval_run, tmp_path):
    import tensorflow as tf

    from mbm_keras.deploy import export_model
    from mbm_keras.retrieval.search import embed_query

    data = retrieval_run[0]
    run = str(data / "run")
    saved = export_model(run, "saved_model", out=str(tmp_path / "sm"), verbose=False)
    assert min(saved["check"]["min_cosine"].values()) >= 0.999 and saved["check"]["examples"] == 8
    served = tf.saved_model.load(str(tmp_path / "sm"))
    assert {"embed_query", "embed_candidate", "serving_default"} <= set(served.signatures)
    # Raw inputs in: the query's text, the candidate's PNG bytes; unit vectors out, equal to the Keras towers'.
    texts = ["a crimson thing number 3", "an azure thing"]
    got = served.signatures["embed_query"](text=tf.constant(texts))["embedding"].numpy()
    png = open(data / "img" / "0.png", "rb").read()
    image = served.signatures["embed_candidate"](image=tf.constant([png]))["embedding"].numpy()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(got[:1], embed_query(run, {"text": texts[0]}), atol=1e-5)
    for quantize in ("none", "int8"):
        result = export_model(run, "tflite", out=str(tmp_path / f"tflite-{quantize}"), quantize=quantize, verbose=False)
        files = sorted(os.listdir(tmp_path / f"tflite-{quantize}"))
        assert {"query.tflite", "candidate.tflite", "query.json", "candidate.json", "preprocessor.json"} <= set(files)
        if quantize == "none":
            assert min(result["check"]["min_cosine"].values()) >= 0.999
        assert result["check"]["top10_overlap"] >= 0.9
