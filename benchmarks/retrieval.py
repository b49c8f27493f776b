"""Cross-modal search on AV-digits, and the vector index at scale.

Part 1, with `--data ../shared/data`: spoken digits (Free Spoken Digit
Dataset) query a catalogue of handwritten digits (MNIST test images), and the
reverse, on the files and speaker-independent folds of
benchmarks/av_digits.py (images reduced to a few principal components,
recordings at 0 dB SNR). A hit is a catalogue item of the query's digit:
class-level mAP and precision@10 (the share of the top 10
of the query's class) on the held-out speaker's 500 recordings and 500 test-pool images, for:

- the contrastive model: `build_retrieval_model` with a `logmel_tcn` audio
  tower (`--audio-encoder`; logmel_cnn, the classifiers' encoder, gave 0.337 /
  0.389 mAP against 0.412 / 0.437) and a small-CNN image tower, trained with the supervised `ContrastiveLoss`
  (the examples of a digit are positives of each other);
- the classifier's features: the AV-digits fusion classifier (concat, modality
  dropout 0.5, masks), whose fused features (the layer before the softmax)
  embed an audio clip with the image marked absent and an image with the
  audio marked absent, so both land in one space;
- each modality's own classifier (the same encoders, trained apart), an
  item embedded as its class probabilities: a score is the probability that
  query and candidate are of one class, the ranking class-level mAP rewards
  when the probabilities are right; how far these encoders' accuracy lets
  search go;
- an ensemble of the contrastive model and those classifiers: the mean of
  the two scores;
- a ceiling: queries that know their digit, the catalogue ranked by its own
  classifier's probability of it (what a perfect query tower would reach
  against that catalogue model);
- the contrastive model again, its encoders starting from those two
  classifiers' (unimodal pretraining, through the encoders' `weights=`);
- random ranking.

It also prints how far any image tower can go (k-nearest-neighbour accuracy
on the degraded images) and each modality's classifier's test accuracy.
`--seen-speaker` is a diagnostic: the held-out speaker's even takes join
training and the odd takes are tested (`av_digits.fold_manifests`).

Part 2, always: indexes of 10k, 100k (and 1M with `--scale 1000000`) random
unit vectors: build seconds, memory, queries/s and recall@10 against exact
search, for the mbm_keras `Index` kinds "pq" (faiss-cpu's product-quantized
fast scan, its best candidates re-scored exactly) and "hnsw" (faiss-cpu's HNSW
graph), usearch's HNSW, ScaNN and exact search (a matrix product), each when
installed (`pip install usearch scann` for the last two).

Usage:
    python benchmarks/retrieval.py --data ../shared/data [--folds theo] [--epochs 8] [--save-embeddings DIR]
    python benchmarks/retrieval.py --data ../shared/data --seen-speaker --scale   # a diagnostic, not speaker-independent
    python benchmarks/retrieval.py --scale 10000 100000 1000000
    python benchmarks/retrieval.py --scale 1000000 --indexes pq   # minutes, not the graphs' half hour
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def cross_modal(args):
    import keras

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from av_digits import SPEC, build_files, fold_manifests

    from mbm_keras import build_fusion_model
    from mbm_keras.data import fit_preprocessor, make_dataset
    from mbm_keras.retrieval import build_retrieval_model, contrastive_dataset, retrieval_metrics

    table, info = build_files(args.data, args.work, verbose=True)
    print(f"The images' information limit: {_image_limit(table, info['folder'])}", flush=True)
    folds = args.folds or sorted({r["speaker"] for r in table})
    results = {name: [] for name in ("contrastive", "classifier features", "unimodal class probabilities",
                                     "contrastive and class probabilities, scores averaged (an ensemble)",
                                     "oracle query, catalogue by its classifier",
                                     "contrastive, towers from the unimodal classifiers", "random")}
    exports = {}
    accuracy = {"audio": [], "image": []}  # each modality's own classifier on the test rows
    for speaker in folds:
        train_manifest, tests = fold_manifests(table, info["folder"], speaker, seen_takes=args.seen_speaker)
        pre = fit_preprocessor(train_manifest, {"image": "image", "audio": "audio", "label": "label"},
                               image_size=(28, 28), sample_rate=SPEC["sample_rate"], audio_length=4000)
        common = dict(preprocessor=pre, batch_size=64, seed=SPEC["seed"], cache="memory", verbose=False)
        test = [(x, y) for x, y in make_dataset(tests["both"], **common).unbatch().as_numpy_iterator()]
        audio = np.stack([x["audio"] for x, _ in test])
        images = np.stack([x["image"] for x, _ in test])
        labels = np.array([y for _, y in test])

        keras.utils.set_random_seed(SPEC["seed"])
        t = time.perf_counter()
        model = build_retrieval_model(query={"audio": ("audio", args.audio_encoder)},
                                      candidate={"image": ("image", "small_cnn")}, embedding_dim=64,
                                      audio_kwargs={"hop_ms": 20.0}, learning_rate=2e-3, **pre.model_kwargs())
        train = contrastive_dataset(make_dataset(train_manifest, training=True, **common), supervised=True)
        model.fit(train, epochs=args.epochs, verbose=0)
        contrastive_seconds = time.perf_counter() - t
        q = model.get_layer("query_tower").predict({"audio": audio}, verbose=0)
        c = model.get_layer("candidate_tower").predict({"image": images}, verbose=0)
        results["contrastive"].append(_both_ways(retrieval_metrics, q, c, labels, contrastive_seconds))
        embeddings = {"labels": labels, "contrastive_audio": q, "contrastive_image": c}
        if speaker == folds[0] and args.tflite:
            exports.update(_tflite_parity(model, train, {"audio": audio, "image": images}, q, c))

        keras.utils.set_random_seed(SPEC["seed"])
        t = time.perf_counter()
        classifier = build_fusion_model(image="small_cnn", audio="logmel_cnn", fusion="concat",
                                        missing_modalities=True, fusion_kwargs={"units": 64}, dropout=0.2,
                                        audio_kwargs={"hop_ms": 20.0}, **pre.model_kwargs())
        classifier.fit(make_dataset(train_manifest, training=True, missing_modalities=True, modality_dropout=0.5,
                                    **common), epochs=args.epochs, verbose=0)
        seconds = time.perf_counter() - t
        fused = keras.Model(classifier.input, classifier.get_layer("fusion").output)
        ones, zeros = np.ones((len(test), 1), np.float32), np.zeros((len(test), 1), np.float32)
        q = fused.predict({"audio": audio, "image": np.zeros_like(images), "audio_mask": ones, "image_mask": zeros},
                          verbose=0)
        c = fused.predict({"audio": np.zeros_like(audio), "image": images, "audio_mask": zeros, "image_mask": ones},
                          verbose=0)
        unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
        results["classifier features"].append(_both_ways(retrieval_metrics, unit(q), unit(c), labels, seconds))
        embeddings.update({"classifier_features_audio": unit(q), "classifier_features_image": unit(c)})

        # Each modality's own classifier; an item's embedding is its class probabilities, so a query-candidate
        # score is the probability that both are of one class (the ranking class-level mAP rewards, if the
        # probabilities are right). A yardstick of how far these encoders' accuracy lets search go.
        t = time.perf_counter()
        probabilities = {}
        weights = {name: os.path.join(info["folder"], f"{speaker}-{name}.weights.h5") for name in ("audio", "image")}
        for name, encoder, x in (("audio", "logmel_cnn", audio), ("image", "small_cnn", images)):
            keras.utils.set_random_seed(SPEC["seed"])
            single = build_fusion_model(**{name: encoder}, dropout=0.2,
                                        **({"audio_kwargs": {"hop_ms": 20.0}} if name == "audio" else {}),
                                        **pre.model_kwargs())
            only = make_dataset(train_manifest, training=True, **common).map(lambda x, y, n=name: ({n: x[n]}, y))
            single.fit(only, epochs=args.epochs, verbose=0)
            probabilities[name] = single.predict({name: x}, verbose=0)
            single.get_layer(f"{name}_encoder").save_weights(weights[name])
        classifiers_seconds = time.perf_counter() - t
        for name in ("audio", "image"):
            accuracy[name].append(np.mean(probabilities[name].argmax(1) == labels))
        results["unimodal class probabilities"].append(_both_ways(retrieval_metrics, probabilities["audio"],
                                                                  probabilities["image"], labels, classifiers_seconds))
        embeddings.update({"probabilities_audio": probabilities["audio"], "probabilities_image": probabilities["image"]})
        # An ensemble of the two: the mean of the contrastive cosine and the class-probability score.
        both = {name: np.concatenate([embeddings[f"contrastive_{name}"], probabilities[name]], axis=1) / np.sqrt(2)
                for name in ("audio", "image")}
        results["contrastive and class probabilities, scores averaged (an ensemble)"].append(
            _both_ways(retrieval_metrics, both["audio"], both["image"], labels, contrastive_seconds + classifiers_seconds))
        # A ceiling: a query that knows its digit (one-hot), the catalogue ranked by its own classifier's
        # probability of that digit. No query tower can do better against that catalogue model.
        oracle = np.eye(probabilities["image"].shape[1], dtype=np.float32)[labels]
        results["oracle query, catalogue by its classifier"].append(
            {"audio->image": retrieval_metrics(oracle, probabilities["image"], labels, labels),
             "image->audio": retrieval_metrics(oracle, probabilities["audio"], labels, labels),
             "seconds": classifiers_seconds})

        # The contrastive model again, its encoders starting from those classifiers' (unimodal pretraining).
        keras.utils.set_random_seed(SPEC["seed"])
        t = time.perf_counter()
        model = build_retrieval_model(query={"audio": ("audio", "logmel_cnn")},
                                      candidate={"image": ("image", "small_cnn")}, embedding_dim=64,
                                      audio_kwargs={"hop_ms": 20.0, "weights": weights["audio"]},
                                      image_kwargs={"weights": weights["image"]}, learning_rate=2e-3,
                                      **pre.model_kwargs())
        model.fit(train, epochs=args.epochs, verbose=0)
        q = model.get_layer("query_tower").predict({"audio": audio}, verbose=0)
        c = model.get_layer("candidate_tower").predict({"image": images}, verbose=0)
        results["contrastive, towers from the unimodal classifiers"].append(
            _both_ways(retrieval_metrics, q, c, labels, classifiers_seconds + time.perf_counter() - t))

        if args.save_embeddings:  # for analysis: each model's test embeddings of this fold
            os.makedirs(args.save_embeddings, exist_ok=True)
            np.savez(os.path.join(args.save_embeddings, f"{speaker}.npz"), **embeddings)
        rng = np.random.default_rng(SPEC["seed"])
        results["random"].append(_both_ways(retrieval_metrics, unit(rng.normal(size=q.shape)),
                                            unit(rng.normal(size=c.shape)), labels, 0.0))
        print(f"  [{speaker}] " + "  ".join(f"{name}: mAP {r[-1]['audio->image']['map']:.3f}"
                                            for name, r in results.items()), flush=True)

    print(f"\nCross-modal search on AV-digits, {len(folds)} held-out speaker(s) ({', '.join(folds)})"
          f"{' (SEEN in training: other takes of the same speaker)' if args.seen_speaker else ''}, "
          f"{args.epochs} epochs; class-level, mean ± std over folds")
    print("| model | audio->image mAP | audio->image precision@10 | image->audio mAP | image->audio precision@10 | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    summary = {}
    for name, runs in results.items():
        cells = []
        for direction in ("audio->image", "image->audio"):
            for metric in ("map", "class_precision@10"):
                values = np.array([r[direction][metric] for r in runs])
                cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
                summary[(name, direction, metric)] = values.mean()
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean([r['seconds'] for r in runs]):.0f} |")
    print("Test accuracy of each modality's own classifier: " + ", ".join(
        f"{name} {np.mean(v):.3f} ± {np.std(v):.3f}" for name, v in accuracy.items()))
    for quantize, r in exports.items():
        print(f"TFLite towers ({quantize}), first fold's test rows: lowest cosine with Keras {r['min_cosine']:.5f}, "
              f"top-10 overlap of audio->image search {r['top10_overlap']:.3f}")
    for direction in ("audio->image", "image->audio"):
        for name in ("contrastive", "contrastive and class probabilities, scores averaged (an ensemble)",
                     "contrastive, towers from the unimodal classifiers"):
            ratio = summary[(name, direction, "map")] / summary[("classifier features", direction, "map")]
            print(f"{direction}: {name} mAP / classifier-feature mAP = {ratio:.2f} (target >= 2); "
                  f"random mAP {summary[('random', direction, 'map')]:.3f}")


def _image_limit(table, folder, k=15):
    """An estimate of how well an image tower can tell the degraded digits apart: k-nearest-neighbour voting
    (every training-pool image a neighbour), its accuracy on the test-pool images. The images are a few principal components,
    so pixel distance is distance between those components."""
    from PIL import Image

    def pixels(key):
        return np.stack([np.asarray(Image.open(os.path.join(folder, r[key])), np.float32).ravel() for r in table])

    train, test = pixels("image_train"), pixels("image_test")
    digits = np.array([r["digit"] for r in table])
    distance = (test**2).sum(1)[:, None] - 2 * test @ train.T + (train**2).sum(1)[None]
    nearest = digits[np.argsort(distance, axis=1)[:, :k]]
    votes = np.stack([(nearest == d).sum(1) for d in range(10)], axis=1)
    return f"{k}-nearest-neighbour accuracy on the {len(test)} test-pool images {np.mean(votes.argmax(1) == digits):.3f}"


def _tflite_parity(model, train, test, q, c):
    """Each tower to TFLite (float32, int8 calibrated on 64 training rows): cosine with Keras and the overlap
    of the top 10 of each audio query among the image catalogue, on the test rows."""
    import tempfile

    from mbm_keras.deploy import convert_to_tflite
    from mbm_keras.deploy.retrieval_export import _cosine, _top_overlap
    from mbm_keras.deploy.tflite import run_tflite, tflite_interpreter

    calibration = [x for x, _ in train.unbatch().take(64).as_numpy_iterator()]
    out = {}
    with tempfile.TemporaryDirectory() as work:
        for quantize in ("none", "int8"):
            got = {}
            for kind, name in (("query", "audio"), ("candidate", "image")):
                path = os.path.join(work, f"{kind}-{quantize}.tflite")
                convert_to_tflite(model.get_layer(f"{kind}_tower"), path, quantize,
                                  representative=[{name: x[name]} for x in calibration])
                interpreter = tflite_interpreter(path)
                got[kind] = np.asarray(run_tflite(interpreter, {name: test[name]}))
            out[quantize] = {"min_cosine": float(min(_cosine(got["query"], q).min(), _cosine(got["candidate"], c).min())),
                             "top10_overlap": _top_overlap(got["query"], got["candidate"], q, c)}
    return out


def _both_ways(metrics, q, c, labels, seconds):
    return {"audio->image": metrics(q, c, labels, labels), "image->audio": metrics(c, q, labels, labels),
            "seconds": seconds}


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def scale(args):
    from mbm_keras.retrieval import Index
    from mbm_keras.retrieval.index import HNSW

    rng = np.random.default_rng(0)
    dim, n_queries, k = args.dim, 1000, 10
    print(f"\nIndexes of random unit vectors, dim {dim}, {n_queries} queries, recall@{k} against exact search; "
          f"speed-ups against the faster exact search; "
          f"HNSW with {HNSW['connectivity']} links, {HNSW['expansion_add']} candidates while adding, ef while "
          f"searching; pq: 4-bit codes per pair of dimensions, the scan's best rerank x {k} re-scored exactly; "
          f"memory: resident growth while building")
    print("| rows | search | build s | memory MB | queries/s | recall@10 |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    contenders = {"pq": ("faiss-cpu PQ scan + exact re-score (mbm_keras Index, kind pq)", "rerank", args.rerank,
                         lambda vectors: _index(Index, vectors, "pq")),
                  "hnsw": ("faiss-cpu HNSW (mbm_keras Index, kind hnsw)", "ef", args.ef,
                           lambda vectors: _index(Index, vectors, "hnsw")),
                  "usearch": ("usearch HNSW", "ef", args.ef, lambda vectors: _usearch(vectors, dim)),
                  "scann": ("ScaNN", "", [0], _scann)}
    for n in args.scale:
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
        exact = Index.build(vectors, kind="exact")
        t = time.perf_counter()
        truth, _ = exact.search(queries, k)
        exact_qps = n_queries / (time.perf_counter() - t)
        print(f"| {n:,} | exact (mbm_keras Index, numpy matrix product) | 0 | {vectors.nbytes / 1e6:,.0f} | "
              f"{exact_qps:,.0f} | 1.000 |", flush=True)
        try:  # faiss' own brute force: the ratios below are against the faster of the two
            import faiss

            flat = faiss.IndexFlatIP(dim)
            flat.add(vectors)
            t = time.perf_counter()
            flat.search(queries, k)
            flat_qps = n_queries / (time.perf_counter() - t)
            print(f"| {n:,} | exact (faiss-cpu IndexFlatIP) | 0 | {vectors.nbytes / 1e6:,.0f} | {flat_qps:,.0f} | "
                  f"1.000 |", flush=True)
            exact_qps = max(exact_qps, flat_qps)
            del flat
        except ImportError:
            pass
        for key in args.indexes:
            name, setting, values, make = contenders[key]
            try:
                before, t = _rss_mb(), time.perf_counter()
                search = make(vectors)
                build, memory = time.perf_counter() - t, _rss_mb() - before
            except Exception as e:  # not installed, or (ScaNN 1.4.2) its TF ops do not load next to TF 2.21
                print(f"| {n:,} | {name} | not usable here: {type(e).__name__}: {str(e).splitlines()[-1][:120]} | | | |")
                continue
            for value in values:
                search(queries[:10], k, value)
                t = time.perf_counter()
                ids = search(queries, k, value)
                qps = n_queries / (time.perf_counter() - t)
                recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth)])
                label = f"{name}, {setting} {value}" if setting else name
                print(f"| {n:,} | {label} | {build:.1f} | {memory:,.0f} | {qps:,.0f} ({qps / exact_qps:.1f}x exact) "
                      f"| {recall:.3f} |", flush=True)
            del search


def _index(Index, vectors, kind):
    index = Index.build(vectors, kind=kind)
    index._ensure_graph()  # builds the structure now, inside the timed build

    def search(q, k, value):
        index.settings["rerank" if kind == "pq" else "expansion_search"] = value
        return index.search(q, k)[0]
    return search


def _usearch(vectors, dim):
    from usearch.index import Index as Graph

    from mbm_keras.retrieval.index import HNSW

    graph = Graph(ndim=dim, metric="ip", dtype="f32", connectivity=HNSW["connectivity"],
                  expansion_add=HNSW["expansion_add"])
    graph.add(np.arange(len(vectors)), vectors)

    def search(q, k, ef):
        graph.expansion_search = ef
        return np.asarray(graph.search(q / np.linalg.norm(q, axis=1, keepdims=True), k).keys)
    return search


def _scann(vectors):
    import scann

    leaves = max(16, int(np.sqrt(len(vectors))))
    searcher = (scann.scann_ops_pybind.builder(vectors, 10, "dot_product")
                .tree(num_leaves=leaves, num_leaves_to_search=max(4, leaves // 10),
                      training_sample_size=min(len(vectors), 250_000))
                .score_ah(2, anisotropic_quantization_threshold=0.2).reorder(100).build())
    return lambda q, k, ef: searcher.search_batched(q / np.linalg.norm(q, axis=1, keepdims=True),
                                                    final_num_neighbors=k)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with fsdd/ and mnist/ (part 1), e.g. ../shared/data")
    parser.add_argument("--work", default=os.path.join(os.path.expanduser("~"), ".cache", "mbm_keras"),
                        help="where part 1's generated files go (default: %(default)s)")
    parser.add_argument("--folds", nargs="+", help="test speakers (default: every speaker), e.g. --folds theo")
    parser.add_argument("--epochs", type=int, default=16, help="training epochs of part 1 (default: %(default)s)")
    parser.add_argument("--audio-encoder", default="logmel_tcn",
                        help="audio encoder of part 1's contrastive model (default: %(default)s; the classifiers "
                             "use logmel_cnn), e.g. --audio-encoder logmel_cnn")
    parser.add_argument("--no-tflite", dest="tflite", action="store_false",
                        help="skip part 1's TFLite parity check of the towers")
    parser.add_argument("--seen-speaker", action="store_true",
                        help="a diagnostic, not speaker-independent: the test speaker's even takes join training, "
                             "the odd takes are tested")
    parser.add_argument("--save-embeddings", metavar="DIR",
                        help="write each fold's test embeddings of part 1's models to DIR/<speaker>.npz")
    parser.add_argument("--scale", type=int, nargs="*", default=[10_000, 100_000],
                        help="index sizes of part 2 (default: 10000 100000; none: skip)")
    parser.add_argument("--dim", type=int, default=64, help="vector size of part 2 (default: %(default)s)")
    parser.add_argument("--indexes", nargs="+", choices=("pq", "hnsw", "usearch", "scann"),
                        default=["pq", "hnsw", "usearch", "scann"],
                        help="what part 2 measures besides exact search (default: all), e.g. --indexes pq")
    parser.add_argument("--ef", type=int, nargs="+", default=[256, 512],
                        help="HNSW candidates kept while searching, part 2 (default: 256 512)")
    parser.add_argument("--rerank", type=int, nargs="+", default=[16, 48, 128],
                        help="pq candidates re-scored per result, part 2 (default: 16 48 128)")
    args = parser.parse_args()
    if args.data:
        cross_modal(args)
    if args.scale:
        scale(args)


if __name__ == "__main__":
    main()
