"""The task endpoints of `mbm-keras serve`, beside TensorFlow Serving's REST API: each task names its own
(`Task.endpoints`) and `create_app` adds them.

- `/predict` (classifiers, regressors): multipart inputs -> the top classes with their probabilities.
- `/embed` (retrieval): multipart inputs of one tower -> its unit vector.
- `/search` (retrieval, with `--index`): a query's inputs and `k` -> the best catalogue rows with their
  scores, cells and the URLs of their files (`/rows/ID/COLUMN`, served by row id only). Concurrent queries
  are embedded and searched together (`Catalogue.searcher`: one model call, one index search).
- `/transcribe` (transcription): a clip, an optional context and candidate list -> the transcript.

Every one runs its model call through the batcher of its signature, so concurrent requests share model calls.
"""

import asyncio
import dataclasses

from mbm_keras.serve.catalogue import K
from mbm_keras.serve.forms import read_form, split_fields, text_setting, whole_number
from mbm_keras.serve.servable import RequestError

MAX_K = 1000  # the most rows one search answers
MAX_CANDIDATES = 1000  # the most candidate transcripts one request scores
MAX_BEAM = 64


@dataclasses.dataclass
class Served:
    """What an endpoint works with: the model, a batcher per signature, the catalogue (or None), the options."""

    servable: object
    batchers: dict
    catalogue: object
    options: object

    async def call(self, values, signature="serving_default"):
        """One example's outputs (`{output: row}`) through the signature's batcher."""
        outputs, rows = await self.batchers[signature].submit([self.servable.example(values, signature)])
        return self.servable.answer(outputs, rows[0])


def add_endpoints(app, served):
    """Adds the endpoints of the served model's task to `app`."""
    for name in served.servable.task.endpoints:
        if name not in ENDPOINTS:
            raise ValueError(f"task {served.servable.task.name!r} names endpoint {name!r}; mbm-keras serve has "
                             f"{', '.join(ENDPOINTS)}")
        ENDPOINTS[name](app, served)


def _predict(app, served):
    from fastapi import Request
    from fastapi.responses import JSONResponse

    servable = served.servable

    @app.post("/predict")
    async def predict(request: Request):
        fields = await read_form(request, served.options.max_body_bytes)
        values, settings = split_fields(fields, ("top",), servable.inputs)
        top = whole_number(settings, "top", 3)
        answer = await served.call(values)
        if "probabilities" not in answer or "classes" not in answer:
            return JSONResponse({"predictions": answer.get("predictions", answer)})
        ranked = servable.task.answer(answer["probabilities"], answer["classes"], top, servable.path)
        return JSONResponse({"label": answer["label"], "score": answer["score"],
                             "classes": [{"class": c, "probability": p} for c, p in ranked]})


def _embed(app, served):
    from fastapi import Request
    from fastapi.responses import JSONResponse

    servable = served.servable

    @app.post("/embed")
    async def embed(request: Request):
        fields = await read_form(request, served.options.max_body_bytes)
        tower = text_setting(dict((k, [v]) for k, v in fields if k == "tower"), "tower") or "query"
        if tower not in ("query", "candidate"):
            raise RequestError(f"tower must be query or candidate. Received: {tower!r}", field="tower")
        signature = f"embed_{tower}"
        values, _ = split_fields(fields, ("tower",), servable.signature(signature).inputs)
        _need_one(values, servable.signature(signature), f"the {tower} tower")
        vector = (await served.call(values, signature))["embedding"]
        return JSONResponse({"tower": tower, "dimensions": len(vector), "embedding": vector})


def _search(app, served):
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse

    servable = served.servable

    @app.post("/search")
    async def search(request: Request):
        catalogue = _catalogue(served)
        fields = await read_form(request, served.options.max_body_bytes)
        values, settings = split_fields(fields, ("k",), servable.signature("embed_query").inputs)
        k = whole_number(settings, "k", 10, high=MAX_K)
        _need_one(values, servable.signature("embed_query"), "a query")
        example = {**servable.example(values, "embed_query"), K: k}
        outputs, rows = await served.batchers["search"].submit([example])
        return JSONResponse(catalogue.results(outputs["ids"][rows[0]], outputs["scores"][rows[0]], k))

    @app.get("/rows/{row_id}/{column}")
    async def row_file(row_id: int, column: str):
        path, media_type = _catalogue(served).file(row_id, column)
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


def _transcribe(app, served):
    import numpy as np
    from fastapi import Request

    servable = served.servable
    signature = servable.signature("serving_default")
    audio = next(n for n, m in signature.modalities.items() if m == "audio")
    context = next((n for n, m in signature.modalities.items() if m == "text"), None)

    @app.post("/transcribe")
    async def transcribe(request: Request):
        fields = await read_form(request, served.options.max_body_bytes)
        if context is None and any(k == "context" for k, _ in fields):
            raise RequestError("this model was trained without a text context: send the clip alone", field="context")
        values, settings = split_fields(fields, ("candidates", "beam"), signature.inputs)
        if not values.get(audio):
            raise RequestError(f"input {audio!r}: the clip to transcribe is missing (a WAV file)", field=audio)
        beam = whole_number(settings, "beam", None, high=MAX_BEAM)
        candidates = _candidates(settings.get("candidates"))
        log_probs = np.asarray((await served.call(values))["log_probs"], np.float32)[None]
        if candidates:
            return await asyncio.to_thread(_choose, log_probs, candidates, servable.vocabulary)
        from mbm_keras.transcription import decode

        text = (await asyncio.to_thread(decode, log_probs, servable.vocabulary, beam))[0]
        return {"transcript": text, "decoding": f"beam {beam}" if beam else "greedy"}


def _catalogue(served):
    """The served index; 404 saying how to give one when the server has none."""
    if served.catalogue is None:
        raise RequestError("this server holds no index: start it with mbm-keras serve --index CATALOGUE.index",
                           status=404)
    return served.catalogue


def _need_one(values, signature, what):
    if not any(v not in (None, "", b"") for v in values.values()):
        names = ", ".join(f"{n} ({i['modality']})" for n, i in signature.inputs.items())
        raise RequestError(f"{what} needs at least one of its inputs: {names}")


def _candidates(given):
    """The candidate transcripts of a form: repeated `candidates` fields, or one field of lines."""
    if not given:
        return None
    texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in given]
    texts = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    if not texts:
        raise RequestError("candidates is empty: give at least one transcript the clip may say", field="candidates")
    if len(texts) > MAX_CANDIDATES:
        raise RequestError(f"{len(texts)} candidates; at most {MAX_CANDIDATES}", field="candidates", status=413)
    return texts


def _choose(log_probs, candidates, vocabulary):
    """The likeliest candidate, and every candidate's CTC log-likelihood, best first."""
    import math

    from mbm_keras.transcription import candidate_scores

    scores = candidate_scores(log_probs, [candidates], vocabulary)[0]
    ranked = sorted(zip(candidates, (float(s) for s in scores)), key=lambda c: -c[1])
    if not math.isfinite(ranked[0][1]):
        raise RequestError(f"none of the {len(candidates)} candidate(s) can be aligned with the clip (each is "
                           f"longer than the clip allows, or has no character the model knows)", field="candidates")
    return {"transcript": vocabulary.normalize(ranked[0][0]), "decoding": "candidates",
            "candidates": [{"text": t, "log_likelihood": s if math.isfinite(s) else None} for t, s in ranked]}


ENDPOINTS = {"predict": _predict, "embed": _embed, "search": _search, "transcribe": _transcribe}
