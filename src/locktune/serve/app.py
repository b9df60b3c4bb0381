"""`locktune serve`: the search page and its JSON API (OpenAPI at /openapi.json, docs at /docs).

    POST /api/classify    an uploaded or indexed image against typed labels -> probabilities
    POST /api/search      text -> top-k indexed images
    POST /api/neighbors   an uploaded or indexed image -> nearest labels, and nearest images
    GET  /api/images      a page of indexed images to choose from
    GET  /thumbs/{name}   a thumbnail (only files inside the index's thumbnail folder)

Every error is JSON {"error": message} with a 4xx code; nothing a client sends can stop the server.
Under load, an upload that would take the decode budget past its limits (decodes at once, megapixels in
flight: `serve/budget.py`) waits briefly, then gets 503 with Retry-After; a body past the upload limit is cut
with 413 as it streams, chunked or not (`serve/body_limit.py`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from locktune.errors import LocktuneError
from locktune.serve.batcher import TextBatcher
from locktune.serve.body_limit import CapBody
from locktune.serve.budget import DECODE_WAIT_S, MAX_DECODE_MEGAPIXELS, MAX_DECODES, DecodeBudget
from locktune.serve.freed_memory import give_back_freed_memory
from locktune.serve.uploads import (MAX_LABELS, MAX_PIXELS, MAX_UPLOAD_BYTES, BadInput, image_size, parse_labels,
                                    read_image)

# Room past the image's own limit for the form's other fields (labels) and the multipart framing.
BODY_SLACK_BYTES = 1024 * 1024

STATIC = Path(__file__).parent / "static"
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "an icon of a {}.", "{}"]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=500, description="what to look for, e.g. 'a red car'")
    k: int = Field(12, ge=1, le=200, description="how many images")


class ImageHit(BaseModel):
    id: int
    path: str
    thumb: str
    score: float


class SearchResponse(BaseModel):
    query: str
    results: list[ImageHit]
    ms: float


class LabelScore(BaseModel):
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    labels: list[LabelScore]
    scores: str = Field(description="softmax: shares of the labels given, summing to 1 | sigmoid (a model trained "
                                    "with train.loss=sigmoid): each label's own chance of matching, not summing to 1")
    ms: float


class NeighborLabel(BaseModel):
    label: str
    score: float


class NeighborsResponse(BaseModel):
    labels: list[NeighborLabel]
    images: list[ImageHit]
    ms: float


def create_app(model, index=None, max_batch: int = 64, max_decodes: int = MAX_DECODES,
               max_decode_megapixels: float = MAX_DECODE_MEGAPIXELS, decode_wait_s: float = DECODE_WAIT_S) -> FastAPI:
    """The app for a `locktune.api.LitModel` and an optional `locktune.index.ImageIndex`.

    Concurrent search queries are encoded together, up to `max_batch` at a time (1: one at a time).  Uploaded
    images are decoded and embedded at most `max_decodes` at a time and `max_decode_megapixels` together (by
    their headers); one that does not fit within `decode_wait_s` gets 503 with Retry-After.  An index whose
    vectors do not fit the model is refused here, before the server starts, as a LocktuneError."""
    if index is not None:
        check_index_fits(model, index)
    app = FastAPI(title="locktune", version="1", description=__doc__)
    _install_error_handlers(app)
    app.state.text_batcher = batcher = TextBatcher(lambda texts: model.encode_text(texts).cpu().numpy(),
                                                   max_batch=max_batch,
                                                   search_many=index.search_many if index is not None else None)
    app.state.decode_budget = budget = DecodeBudget(max_decodes, max_decode_megapixels, decode_wait_s)
    max_pixels = min(MAX_PIXELS, budget.max_pixels)  # a bigger image could never be admitted: refuse it as such

    app.add_middleware(CapBody, limit=MAX_UPLOAD_BYTES + BODY_SLACK_BYTES, upload_limit_bytes=MAX_UPLOAD_BYTES)

    def image_from(upload: Optional[UploadFile], image_id: Optional[int]):
        """The request's image: an upload, or an indexed image chosen by id -> embedding [dim]."""
        if upload is not None and upload.filename:
            data = upload.file.read(MAX_UPLOAD_BYTES + 1)
            width, height = image_size(data, max_pixels)
            # Held through the image tower too: its resize works on the full decoded image; and until the
            # memory the decode freed is given back, so the next decode admitted finds it free.
            with budget.claim(width * height):
                try:
                    return model.encode_image(read_image(data, max_pixels))[0].cpu().numpy()
                finally:
                    give_back_freed_memory(width * height)
        if image_id is not None:
            if index is None or not 0 <= image_id < len(index):
                raise BadInput(404, f"no indexed image with id {image_id}")
            return index.vector(image_id)
        raise BadInput(422, "send an image: upload a file as 'image', or give 'image_id' of an indexed image")

    def hits(rows, scores) -> list[dict]:
        return [{**index.image(int(r)), "score": round(float(s), 4)} for r, s in zip(rows, scores)]

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    def info() -> dict:
        """The model and index being served, and the request limits."""
        return {"embed_dim": model.embed_dim, "setting": model.net.config.setting,
                "image_tower": model.net.config.image_tower, "text_tower": model.net.config.text_tower,
                "loss": model.loss, "scores": model.scores,
                "images": len(index) if index is not None else 0, "labels": len(index.labels) if index else 0,
                "limits": {"upload_bytes": MAX_UPLOAD_BYTES, "labels": MAX_LABELS, "image_pixels": max_pixels,
                           "decodes": budget.describe()},
                "text_batches": {"max_batch": batcher.max_batch, "calls": batcher.batches, "queries": batcher.queries}}

    @app.post("/api/classify", response_model=ClassifyResponse)
    def classify(labels: str = Form(..., description="labels, one per line or comma-separated"),
                 image: Optional[UploadFile] = File(None), image_id: Optional[int] = Form(None)):
        """Zero-shot classification: probability of each label.  Softmax-trained model: softmax over the labels of
        scale * cosine (scale = exp(logit_scale)); sigmoid-trained: sigmoid(scale * cosine + logit_bias) per label
        (`scores`)."""
        start = time.perf_counter()
        names = parse_labels(labels)
        embedding = image_from(image, image_id)
        classifier = model.zero_shot_classifier(names, TEMPLATES)
        probs = classifier.probabilities(embedding[None, :])[0].cpu().numpy()
        order = np.argsort(-probs, kind="stable")
        return {"labels": [{"label": classifier.class_names[i], "probability": float(probs[i])} for i in order],
                "scores": model.scores, "ms": _ms(start)}

    @app.post("/api/search", response_model=SearchResponse)
    async def search(body: SearchRequest):
        """Text -> the k indexed images nearest to it (concurrent queries are encoded in one batch)."""
        start = time.perf_counter()
        _need_index(index)
        rows, scores = await batcher.search_one(body.query, body.k)
        return {"query": body.query, "results": hits(rows, scores), "ms": _ms(start)}

    @app.post("/api/neighbors", response_model=NeighborsResponse)
    def neighbors(image: Optional[UploadFile] = File(None), image_id: Optional[int] = Form(None),
                  labels: Optional[str] = Form(None, description="your own candidate labels (default: the index's)"),
                  k: int = Form(8, ge=1, le=100)):
        """Image -> the nearest labels (yours, or the index's vocabulary) and the nearest indexed images."""
        start = time.perf_counter()
        embedding = image_from(image, image_id)
        if labels:
            names = parse_labels(labels)
            label_rows, label_scores = _rank(model.encode_text(names).cpu().numpy(), embedding, k)
            label_hits = [{"label": names[i], "score": round(float(s), 4)} for i, s in zip(label_rows, label_scores)]
        elif index is not None and index.labels:
            names, scores = index.nearest_labels(embedding, k)
            label_hits = [{"label": n, "score": round(float(s), 4)} for n, s in zip(names, scores)]
        else:
            raise BadInput(422, "this index has no label vocabulary; send 'labels' to rank")
        images = hits(*index.search(embedding, k)) if index is not None else []
        return {"labels": label_hits, "images": images, "ms": _ms(start)}

    @app.get("/api/images", response_model=list[ImageHit])
    def images(offset: int = 0, limit: int = 24):
        """A page of indexed images (score 0), to choose one without uploading."""
        _need_index(index)
        if offset < 0 or not 1 <= limit <= 200:
            raise BadInput(422, "offset must be >= 0 and limit between 1 and 200")
        return [{**index.image(i), "score": 0.0} for i in range(offset, min(len(index), offset + limit))]

    @app.get("/thumbs/{name:path}", include_in_schema=False)
    def thumb(name: str):
        path = index.thumb_file(name) if index is not None else None
        if path is None:
            raise BadInput(404, "no such thumbnail")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def check_index_fits(model, index) -> None:
    """LocktuneError (one line) if the index's vectors are not [images, the model's embed_dim]: otherwise the
    server would start and answer every search with a 500."""
    found, want = index.embeddings.shape, (len(index), model.embed_dim)
    if tuple(found) != want:
        raise LocktuneError(f"index '{index.folder}': {index.folder / index.vectors_file} holds vectors of shape "
                            f"{tuple(found)}, but this model needs {want} ({want[0]} images x embed_dim "
                            f"{want[1]}); rebuild it with `locktune index {index.meta.get('root', 'FOLDER')} "
                            f"--model MODEL --out {index.folder}`")
    if index.label_embeddings.shape[1:] != (model.embed_dim,):
        raise LocktuneError(f"index '{index.folder}': {index.folder / 'labels.npy'} holds vectors of shape "
                            f"{tuple(index.label_embeddings.shape)}, but this model's embed_dim is "
                            f"{model.embed_dim}; rebuild it with `locktune index "
                            f"{index.meta.get('root', 'FOLDER')} --model MODEL --out {index.folder}`")


def _rank(matrix: np.ndarray, query: np.ndarray, k: int):
    from locktune.index.store import top_k

    return top_k(matrix, query, k)


def _need_index(index) -> None:
    if index is None:
        raise BadInput(409, "no image index is loaded; start the server with --index")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# What the page shows for a request the API's schema refuses: (field, pydantic error type) -> message.
FRIENDLY = {
    ("labels", "missing"): "type at least one label (one per line, or separated by commas)",
    ("query", "missing"): "type what to look for, e.g. 'a red car'",
    ("query", "string_too_short"): "type what to look for, e.g. 'a red car'",
    ("query", "string_too_long"): "the query is longer than 500 characters; shorten it",
    ("query", "string_type"): "the query must be text, e.g. 'a red car'",
    ("k", "*"): "k (how many images) must be a whole number from 1 to 200",
    ("image_id", "*"): "image_id must be the number of an indexed image",
    ("offset", "*"): "offset must be a whole number, 0 or more",
    ("limit", "*"): "limit must be a whole number from 1 to 200",
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(request: Request, error: BadInput):
        return _error(error.status, error.message, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        problems = []
        for e in error.errors():
            if e.get("type") == "json_invalid":
                return _error(400, "the request body is not valid JSON; send e.g. {\"query\": \"a red car\", \"k\": 12}")
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(FRIENDLY.get((where, e.get("type")), FRIENDLY.get((where, "*")))
                            or (f"{where}: {e.get('msg')}" if where else e.get("msg")))
        return _error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            return _error(404, f"no such page or file: {request.url.path} (the API is described at /docs)")
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        # A bug must cost one request, not the server; the client gets a plain message.
        return _error(500, f"internal error: {type(error).__name__}")


def serve(model, index, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 64, **limits) -> None:
    """Run the server until interrupted; `limits` are `create_app`'s decode budget (max_decodes ...)."""
    import uvicorn

    uvicorn.run(create_app(model, index, max_batch, **limits), host=host, port=port, log_level="warning")

