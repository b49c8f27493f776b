"""The index `mbm-keras serve --index` searches: its rows, and their files served by row id only.

A request names a row by its position in the index and a column by name; the file's path comes from the
index (written by `mbm-keras index`), never from the request, so the server hands out only the catalogue's
own images and clips.
"""

import os

from mbm_keras.serve.servable import RequestError

# What a file of each kind starts with, and the media type it is served as.
MEDIA_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
               (b"GIF89a", "image/gif"), (b"BM", "image/bmp"), (b"fLaC", "audio/flac"), (b"OggS", "audio/ogg"))
SHOWN = ("image", "audio")  # the modalities whose files a page can show or play
K = "_k"  # a search example's number of results (no model input has a name starting with "_")


class Catalogue:
    """An index loaded for searching with a served retrieval model.

    Args:
        path: the index file (`mbm-keras index --out`).
        servable: the served retrieval model (its run folder, or its SavedModel export).

    Raises:
        ValueError: the model is no retrieval model, or not the one that built the index (a run folder's
            identity is checked; a SavedModel's vector size), naming both.

    Examples:
        >>> catalogue = Catalogue("catalogue.index", Servable("runs/search"))
        >>> catalogue.file(0, "img")
        '/data/catalogue/img/0.png'
    """

    def __init__(self, path, servable):
        from mbm_keras.retrieval.index import Index
        from mbm_keras.retrieval.search import model_id

        if "search" not in servable.task.endpoints:
            raise ValueError(f"--index {path}: searching an index needs a retrieval model; {servable.path} is a "
                             f"{servable.task.name} model")
        self.path = os.path.abspath(path)
        self.index = Index.load(path)
        dim = servable.signature("embed_query").output_specs["embedding"]["shape"][-1]
        if dim != self.index.dim:
            raise ValueError(f"--index {path} holds {self.index.dim}-dimensional vectors and {servable.path} "
                             f"embeds {dim}: index the catalogue with this model (mbm-keras index)")
        if servable.kind == "keras" and self.index.model is not None and self.index.model != model_id(servable.path):
            raise ValueError(f"--index {path} was built by another model ({self.index.model}) than {servable.path} "
                             f"({model_id(servable.path)}): index the catalogue again with this run")
        self.checked_model = servable.kind == "keras"  # a SavedModel's run cannot be told from its files
        self.columns = _file_columns(servable)

    def __len__(self):
        return len(self.index)

    def searcher(self, servable):
        """`examples -> {"ids", "scores"}`: the query tower and the index search in one call, for a batch of
        queries (each example holds its `k` under `K`): one matrix product searches them all, beside the event
        loop, as the model runs."""

        def search(examples):
            vectors = servable.run(examples, "embed_query")["embedding"]
            k = min(max(e[K] for e in examples), len(self.index))
            ids, scores = self.index.search(vectors, k=k)
            return {"ids": ids, "scores": scores}

        return search

    def results(self, ids, scores, k):
        """The answer of `/search` for one query's row of `searcher`'s outputs."""
        found = [(int(i), float(s)) for i, s in zip(ids[:k], scores[:k]) if i >= 0]
        return {"results": [{"rank": rank + 1, "score": score, **self.row(i)} for rank, (i, score) in enumerate(found)],
                "rows": len(self.index)}

    def row(self, row_id):
        """`{"id", "row", "cells", "files"}` of a row: its manifest row number, its cells (text, paths, label)
        and the URL and modality of each image or clip, which `file()` serves."""
        row = self.index.rows[row_id]
        cells = {k: v for k, v in row.items() if k not in ("row", "_folder")}
        files = {c: {"url": f"/rows/{row_id}/{c}", "modality": m} for c, m in self.columns.items() if cells.get(c)}
        return {"id": row_id, "row": row.get("row"), "cells": cells, "files": files}

    def file(self, row_id, column):
        """`(path, media type)` of row `row_id`'s file in `column`; RequestError (404) when there is none."""
        if not 0 <= row_id < len(self.index):
            raise RequestError(f"row {row_id}: the index holds rows 0 to {len(self.index) - 1}", field="row",
                               status=404)
        if column not in self.columns:
            raise RequestError(f"column {column!r}: the rows' files are in {', '.join(self.columns) or 'no column'}",
                               field="column", status=404)
        row = self.index.rows[row_id]
        cell = row.get(column)
        if not cell:
            raise RequestError(f"row {row_id} has no {column!r} file", field="column", status=404)
        path = cell if os.path.isabs(cell) else os.path.join(row.get("_folder") or os.path.dirname(self.path), cell)
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except OSError:
            raise RequestError(f"row {row_id}'s {column!r} file is not there any more ({cell})", field="column",
                               status=404) from None
        media = "audio/wav" if head[:4] == b"RIFF" and head[8:12] == b"WAVE" else next(
            (m for magic, m in MEDIA_TYPES if head.startswith(magic)), None)
        if media is None or media.split("/")[0] != self.columns[column]:
            raise RequestError(f"row {row_id}'s {column!r} file is not an {self.columns[column]} file ({cell})",
                               field="column", status=404)
        return path, media


def _file_columns(servable):
    """`{column: modality}` of the candidate rows' image and audio columns."""
    pre = servable.preprocessor
    if pre is not None:
        return {column: feature.name for feature in pre.features.values() if feature.name in SHOWN
                for column in feature.columns()}
    modalities = servable.signature("embed_candidate").modalities  # no preprocessor: columns named as features
    return {name: m for name, m in modalities.items() if m in SHOWN}
