"""`Index`: the catalogue's embeddings, searchable by cosine similarity.

Two approximate searches, both faiss (see README, "Search": chosen over usearch
and ScaNN by `benchmarks/retrieval.py`):

- "pq", the default for large catalogues: every row's vector compressed to 4
  bits per pair of dimensions (`IndexPQFastScan`, a product quantizer scanned
  with SIMD lookups), the best `rerank * k` rows of that scan scored again
  exactly (`IndexRefineFlat`). A scan of every row, so its recall does not
  depend on the data having structure; builds in seconds.
- "hnsw": faiss' HNSW graph (`IndexHNSWFlat`), sublinear but slow to build and
  weak on unstructured vectors.

Exact search is a matrix product over the same vectors, the default for small
catalogues. An index is one file written atomically: the vectors, the
approximate structure, each row's fields (file paths, text, label) and the
identity of the model that embedded them.
"""

import io
import json
import os
import zipfile

import numpy as np

FORMAT = "mbm_keras-index-1"
EXACT_BELOW = 50_000  # "auto": exact search under this many rows, "pq" from there
KINDS = ("auto", "exact", "pq", "hnsw")
# HNSW settings: 32 links per node, 256 candidates kept while adding and while searching. On 100,000 random
# 64-d unit vectors (the hardest case: no structure) they reach recall@10 0.985 (16/128/64: 0.47 in usearch);
# benchmarks/retrieval.py measures them.
HNSW = {"connectivity": 32, "expansion_add": 256, "expansion_search": 256}
# "pq": 48 candidates per result re-scored exactly (10 results: the scan's best 480). On 1M random 64-d unit
# vectors: recall@10 0.975 at 19.4x exact search's queries/s; 32: 0.954 at 20.2x (benchmarks/retrieval.py).
PQ = {"rerank": 48}
PQ_TRAINING_ROWS = 100_000  # the quantizer learns its codes from at most this many rows (a fixed sample)


class IndexFileError(ValueError):
    """An index file that cannot be used (corrupt, truncated, another model's); the message names the file.

    Examples:
        >>> try:
        ...     Index.load("catalogue.index", model=model_id("runs/search"))
        ... except IndexFileError as e:
        ...     print(e)
    """


def _faiss():
    try:
        import faiss
    except ImportError as e:  # a core dependency; a broken install is said plainly
        raise ImportError(f"mbm_keras' Index needs faiss (pip install faiss-cpu): {e}") from None
    return faiss


def _unit(vectors, dim=None):
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, dim)"
        raise ValueError(f"vectors must have shape {want}. Received: shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors hold NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"vector {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros; it has no direction to search by")
    return vectors / norms


def _exact(vectors, queries, k, chunk=16):
    """Brute force by matrix products (numpy's BLAS; 2.3x usearch's exact search on 100,000 rows here). 16
    queries at a time: the (16, n) similarities stay in cache; 256 at a time searched 1M rows at half the
    speed (benchmarks/retrieval.py)."""
    ids, scores = [], []
    for start in range(0, len(queries), chunk):
        similarity = queries[start:start + chunk] @ vectors.T
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < similarity.shape[1] else \
            np.tile(np.arange(similarity.shape[1]), (len(similarity), 1))
        best = np.take_along_axis(similarity, top, axis=1)
        order = np.argsort(-best, axis=1, kind="stable")
        ids.append(np.take_along_axis(top, order, axis=1))
        scores.append(np.take_along_axis(best, order, axis=1))
    return np.concatenate(ids).astype(np.int64), np.concatenate(scores).astype(np.float32)


class Index:
    """Cosine-similarity search over a catalogue's embeddings.

    Args:
        dim: the embedding size.
        kind: "exact" (brute force), "pq" (approximate: a compressed scan
            of every row, its best candidates re-scored exactly), "hnsw"
            (approximate: a graph) or "auto" (exact under 50,000 rows, "pq"
            from there).
        model: the identity of the model whose embeddings these are (a
            string; `mbm-keras index` stores the run's model hash) so that
            queries from another model are refused.
        connectivity, expansion_add, expansion_search: HNSW settings
            (`HNSW` when None: 32, 256, 256; a larger `expansion_search`
            finds more of the true neighbours, more slowly).
        rerank: "pq" setting, candidates re-scored exactly per result
            (`PQ`: 48; more finds more of the true neighbours, more slowly).

    Examples:
        >>> index = Index.build(candidate_vectors, rows=[{"image": p} for p in paths])
        >>> ids, scores = index.search(query_vectors, k=10)
        >>> index.save("catalogue.index"); index = Index.load("catalogue.index")
    """

    def __init__(self, dim, kind="auto", model=None, connectivity=None, expansion_add=None, expansion_search=None,
                 rerank=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}. Received: kind={kind!r}")
        self.dim, self.kind, self.model = int(dim), kind, model
        given = {"connectivity": connectivity, "expansion_add": expansion_add, "expansion_search": expansion_search,
                 "rerank": rerank}
        self.settings = {k: {**HNSW, **PQ}[k] if v is None else int(v) for k, v in given.items()}
        if min(self.settings.values()) < 1:
            raise ValueError(f"index settings must be positive. Received: {self.settings}")
        self.vectors = np.zeros((0, self.dim), np.float32)
        self.rows = []
        self.info = {}  # free-form, saved with the index (`mbm-keras index` records the run)
        self._graph = None

    @classmethod
    def build(cls, vectors, rows=None, kind="auto", model=None, **settings):
        """An index of `vectors` (n, dim); `rows`: one dict per vector (what
        `search` results show, e.g. the file path)."""
        vectors = np.asarray(vectors)
        index = cls(vectors.shape[-1], kind=kind, model=model, **settings)
        index.add(vectors, rows)
        return index

    def __len__(self):
        return len(self.vectors)

    @property
    def approximate(self):
        return self.method != "exact"

    @property
    def method(self):
        """How this index searches now: "exact", "pq" or "hnsw" ("auto" resolved by size)."""
        if self._graph is not None:  # a loaded index keeps the structure it was saved with
            return "hnsw" if hasattr(self._graph, "hnsw") else "pq"
        if self.kind == "auto":
            return "pq" if len(self) >= EXACT_BELOW else "exact"
        return self.kind

    def add(self, vectors, rows=None):
        """Adds rows without rebuilding: their ids continue from `len(index)`."""
        vectors = _unit(vectors, self.dim)
        rows = [{} for _ in range(len(vectors))] if rows is None else [dict(r) for r in rows]
        if len(rows) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(rows)} rows")
        self.vectors = np.concatenate([self.vectors, vectors])
        self.rows += rows
        if self._graph is not None:  # the graph numbers rows in the order they are added: ids continue
            self._graph.add(vectors)
        return self

    def _ensure_graph(self):
        if self._graph is None:
            faiss = _faiss()
            if self.method == "hnsw":
                graph = faiss.IndexHNSWFlat(self.dim, self.settings["connectivity"], faiss.METRIC_INNER_PRODUCT)
                graph.hnsw.efConstruction = self.settings["expansion_add"]
            else:
                graph = self._product_quantizer(faiss)
            if len(self.vectors):
                graph.add(self.vectors)
            self._graph = graph
        if hasattr(self._graph, "hnsw"):
            self._graph.hnsw.efSearch = self.settings["expansion_search"]
        else:
            self._graph.k_factor = float(self.settings["rerank"])
        return self._graph

    def _product_quantizer(self, faiss):
        """4-bit codes per pair of dimensions (one per dimension when `dim` is odd), learnt from the rows so far;
        rows added later take the same codes."""
        count = len(self.vectors)
        if count < 16:
            raise ValueError(f"a 'pq' index learns its codes from its rows and needs at least 16 of them; it has "
                             f"{count}. Use kind='exact' for so small a catalogue")
        parts = self.dim // 2 if self.dim % 2 == 0 else self.dim
        scan = faiss.IndexPQFastScan(self.dim, parts, 4, faiss.METRIC_INNER_PRODUCT)
        sample = self.vectors
        if count > PQ_TRAINING_ROWS:  # a fixed sample: the same rows give the same index
            sample = self.vectors[np.sort(np.random.default_rng(0).choice(count, PQ_TRAINING_ROWS, replace=False))]
        scan.train(sample)
        return faiss.IndexRefineFlat(scan)

    def search(self, queries, k=10, exact=None):
        """`(ids, scores)`, each `(n_queries, k)`, best first; scores are
        cosine similarities. `exact` overrides the index's kind."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k (the number of results) must be a positive int. Received: k={k!r}")
        queries = _unit(queries, self.dim)
        if not len(self.vectors):
            raise ValueError("the index is empty")
        k = min(int(k), len(self.vectors))
        if exact if exact is not None else not self.approximate:
            return _exact(self.vectors, queries, k)
        scores, ids = self._ensure_graph().search(queries, k)
        return ids.astype(np.int64), scores.astype(np.float32)

    def save(self, path):
        """Writes the index to `path` atomically: a failure leaves the previous file as it was."""
        path = os.fspath(path)
        meta = {"format": FORMAT, "dim": self.dim, "kind": self.kind, "model": self.model, "count": len(self),
                "settings": self.settings, "info": self.info}
        graph = b""
        if self.approximate:
            graph = _faiss().serialize_index(self._ensure_graph()).tobytes()
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
                buffer = io.BytesIO()
                np.save(buffer, self.vectors)
                z.writestr("vectors.npy", buffer.getvalue())
                z.writestr("rows.json", json.dumps(self.rows, ensure_ascii=False))
                if graph:
                    z.writestr("graph.faiss", graph)
                z.writestr("meta.json", json.dumps(meta))  # last: an index without it is incomplete
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return path

    @classmethod
    def load(cls, path, model=None):
        """Reads an index; `model`: refuse it unless it was built by this model.

        Nothing is decompressed: `save` stores each part uncompressed, and a
        file whose parts are compressed, or whose `meta.json` announces
        another size than its vectors hold, is refused before they are read.
        So loading takes no more memory than the file's own size.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Index not found: {path}")
        try:
            with zipfile.ZipFile(path) as z:
                members = _check_members(path, z)
                meta = _check_meta(path, _read_json(path, z, "meta.json"))
                _check_vectors_size(path, z, members["vectors.npy"], meta)
                vectors = np.load(io.BytesIO(z.read("vectors.npy")), allow_pickle=False)
                rows = _read_json(path, z, "rows.json")
                graph = z.read("graph.faiss") if "graph.faiss" in members else b""
        except IndexFileError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as e:
            raise IndexFileError(f"{path}: corrupt or truncated index file ({type(e).__name__}: {e})") from None
        if vectors.shape != (meta["count"], meta["dim"]) or vectors.dtype != np.float32:
            raise IndexFileError(f"{path}: corrupt index file: {meta['count']} rows of {meta['dim']} float32 announced, "
                                 f"{vectors.shape} {vectors.dtype} vectors found")
        _check_rows(path, rows, meta["count"])
        _check_unit(path, vectors)
        if model is not None and meta["model"] not in (None, model):
            raise IndexFileError(f"{path} was built by another model ({meta['model']}); this one is {model}: "
                                 f"index the catalogue again with this model")
        index = cls(meta["dim"], kind=meta["kind"], model=meta["model"], **meta["settings"])
        index.vectors, index.rows, index.info = vectors, rows, meta.get("info", {})
        if graph:
            try:
                index._graph = _faiss().deserialize_index(np.frombuffer(graph, dtype=np.uint8))
            except RuntimeError as e:
                raise IndexFileError(f"{path}: corrupt index file: its search graph does not load ({e})") from None
            if index._graph.ntotal != len(vectors) or index._graph.d != index.dim:
                raise IndexFileError(f"{path}: corrupt index file: its search graph does not hold the {len(vectors)} rows")
        return index


# What an index file holds: each part stored uncompressed (`Index.save`), meta.json's keys and their types.
MEMBERS = ("meta.json", "vectors.npy", "rows.json", "graph.faiss")
META = {"format": str, "dim": int, "kind": str, "model": (str, type(None)), "count": int, "settings": dict,
        "info": dict}
MAX_DIM = 65_536
UNIT_TOLERANCE = 1e-3  # |norm - 1| of a stored vector (float32 rounding is ~1e-7)


def _check_members(path, z):
    members = {info.filename: info for info in z.infolist()}
    unknown = sorted(set(members) - set(MEMBERS))
    if unknown or not {"meta.json", "vectors.npy", "rows.json"} <= set(members):
        raise IndexFileError(f"{path}: not an mbm_keras index (it holds {', '.join(sorted(members)) or 'nothing'}; "
                             f"an index holds {', '.join(MEMBERS[:3])} and maybe graph.faiss)")
    for name, info in members.items():
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise IndexFileError(f"{path}: {name} is compressed inside the file; mbm_keras writes indexes "
                                 f"uncompressed and does not inflate them (index the catalogue again)")
    return members


def _read_json(path, z, name):
    try:
        return json.loads(z.read(name))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFileError(f"{path}: corrupt index file: {name} is not JSON ({e})") from None


def _check_meta(path, meta):
    if not isinstance(meta, dict):
        raise IndexFileError(f"{path}: corrupt index file: meta.json is not an object")
    if meta.get("format") != FORMAT:
        raise IndexFileError(f"{path}: not an mbm_keras index (format {meta.get('format')!r})")
    missing, unknown = sorted(set(META) - set(meta) - {"info"}), sorted(set(meta) - set(META))
    if missing or unknown:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown key(s) {', '.join(unknown)}"
        raise IndexFileError(f"{path}: corrupt index file: meta.json {what} (its keys: {', '.join(META)})")
    for key, kind in META.items():
        value = meta.get(key, {})
        if not isinstance(value, kind) or isinstance(value, bool):
            raise IndexFileError(f"{path}: corrupt index file: meta.json's {key} is {value!r}")
    if not 1 <= meta["dim"] <= MAX_DIM or meta["count"] < 0 or meta["kind"] not in KINDS:
        raise IndexFileError(f"{path}: corrupt index file: meta.json announces dim {meta['dim']}, count "
                             f"{meta['count']}, kind {meta['kind']!r} (dim 1 to {MAX_DIM:,}, kind one of {KINDS})")
    settings = meta["settings"]  # an index from an earlier version may lack a setting: its default then
    if not set(settings) <= set({**HNSW, **PQ}) or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in settings.values()):
        raise IndexFileError(f"{path}: corrupt index file: meta.json's settings are {settings!r} (positive ints: "
                             f"{', '.join({**HNSW, **PQ})})")
    return meta


def _check_vectors_size(path, z, info, meta):
    """vectors.npy's own header (read alone) and size must be those of the `(count, dim)` float32 array
    meta.json announces: checked before the vectors are read."""
    with z.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except ValueError as e:
            raise IndexFileError(f"{path}: corrupt index file: vectors.npy is not a NumPy array ({e})") from None
        offset = f.tell()
    expected = (meta["count"], meta["dim"])
    payload = meta["count"] * meta["dim"] * 4
    if shape != expected or dtype != np.float32 or fortran or info.file_size != offset + payload:
        raise IndexFileError(f"{path}: corrupt index file: meta.json announces {meta['count']:,} rows of "
                             f"{meta['dim']} float32 ({payload:,} bytes); vectors.npy holds a {shape} {dtype} array "
                             f"in {info.file_size - offset:,} bytes")


def _check_rows(path, rows, count):
    if not isinstance(rows, list) or len(rows) != count:
        found = f"{len(rows)} rows" if isinstance(rows, list) else type(rows).__name__
        raise IndexFileError(f"{path}: corrupt index file: {count} rows announced, rows.json holds {found}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise IndexFileError(f"{path}: corrupt index file: rows.json's entry {i} is {type(row).__name__} "
                                 f"{str(row)[:40]!r}, not an object of the row's cells")


def _check_unit(path, vectors):
    """Stored vectors are unit length (`add` normalizes them): others would make scores that are not cosines."""
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(~(np.abs(norms - 1) <= UNIT_TOLERANCE))  # NaN norms are bad too
    if len(bad):
        raise IndexFileError(f"{path}: corrupt index file: {len(bad):,} of its vectors are not unit length "
                             f"(entry {int(bad[0])}: norm {norms[bad[0]]:.4g}); its scores would not be cosine "
                             f"similarities. Index the catalogue again")
