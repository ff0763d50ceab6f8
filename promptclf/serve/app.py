"""The FastAPI application: ``POST /predict``, ``GET /health``, OpenAPI docs at ``/docs``.

Bad input never reaches the model and never ends in a 500: a body that is not JSON -> 400, too large
-> 413, not sent as ``application/json`` -> 415, a missing or mistyped field, an empty or too-long text, too many texts -> 422, each with one line
in ``{"detail": ...}`` naming what to fix. A full queue -> 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..distill.thresholds import label_sets
from ..predict.loader import Predictor
from .batcher import MicroBatcher, QueueFull, Stopped
from .options import ServeOptions
from .schemas import ErrorResponse, HealthResponse, Prediction, PredictRequest, PredictResponse

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what}
    for code, what in (
        (400, "The body is not valid JSON."),
        (413, "The body is larger than --max-body-bytes."),
        (415, "The body is not sent as Content-Type: application/json."),
        (422, "A field is missing or wrong, a text is empty or too long, or there are too many texts."),
        (503, "The server is busy (retry after Retry-After seconds) or shutting down."),
    )
}


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before anything parses it.

    The declared Content-Length is checked first; a chunked body is counted as it arrives and
    refused the moment it passes the limit, so a huge body is never held in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = f"request body larger than {self.max_bytes:,} bytes (--max-body-bytes): send fewer or shorter texts"
        await _error(413, msg, {"connection": "close"})(scope, receive, send)


def _validation_detail(exc: RequestValidationError) -> tuple[int, str]:
    """(status, one line) for FastAPI's validation errors: 400 for a body that is not JSON, else 422."""
    errors = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid":
            where = err.get("loc", ["body", ""])[-1]
            reason = (err.get("ctx") or {}).get("error", "")
            return 400, f"request body is not valid JSON ({reason} at character {where})".replace(" ()", "")
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if not loc and err.get("type") in ("missing", "model_attributes_type", "dict_type"):
            return 422, 'the body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}'
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return 422, "; ".join(dict.fromkeys(parts)) or "invalid request"


def create_app(predictor: Predictor, options: ServeOptions | None = None, name: str = "student") -> FastAPI:
    """The API around ``predictor`` (loaded already); ``name`` is the folder reported in answers."""
    opts = options or ServeOptions()
    labels = list(predictor.labels)
    thresholds = predictor.thresholds if getattr(predictor, "multi_label", False) else None  # multi-label: sets
    batcher = MicroBatcher(
        lambda texts: predictor.predict_proba(texts, batch_size=opts.max_batch),
        max_batch=opts.max_batch,
        max_wait_ms=opts.max_wait_ms,
        max_queue=opts.max_queue,
    )
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with batcher:
            yield
        log.info(
            "stopped: %d requests, %d texts in %d batches (largest %d)",
            batcher.stats.requests,
            batcher.stats.texts,
            batcher.stats.batches,
            batcher.stats.largest_batch,
        )

    app = FastAPI(
        title="promptclf student",
        summary=f"Text classification by the distilled student {name}",
        description="POST texts to /predict: the student's label and the probability of every label, per text.",
        version="1",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and not (kind == "application/json" or kind.endswith("+json")):
            # FastAPI reads the body as JSON only when it says it is; `curl -d` says form data.
            what = f"Content-Type {kind}" if kind else "no Content-Type"
            return _error(415, f"{what}: send the body as JSON with the header Content-Type: application/json")
        status, detail = _validation_detail(exc)
        return _error(status, detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s (%s)", " ".join(str(exc).split())[:300], type(exc).__name__)
        return _error(500, f"the server failed on this request: {type(exc).__name__}; see the server log")

    def _check(texts: list[str]) -> str | None:
        if not texts:
            return "'texts' is empty: send at least one text"
        if len(texts) > opts.max_texts:
            return f"{len(texts)} texts, at most {opts.max_texts} per request (--max-texts): split them"
        for i, text in enumerate(texts):
            where = "text" if len(texts) == 1 and i == 0 else f"texts[{i}]"
            if not text.strip():
                return f"{where} is empty: every text needs some non-space characters"
            if len(text) > opts.max_text_chars:
                return f"{where} has {len(text):,} characters, at most {opts.max_text_chars:,} (--max-text-chars)"
        return None

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        summary="Classify one text or several",
    )
    async def predict(body: PredictRequest) -> PredictResponse | JSONResponse:
        """``{"text": "..."}`` or ``{"texts": [...]}``: one prediction per text, in order. Concurrent
        requests are batched into one model pass (up to ``--max-batch`` texts)."""
        texts = body.all_texts()
        problem = _check(texts)
        if problem:
            return _error(422, problem)
        try:
            rows = await batcher.submit(texts)
        except QueueFull as exc:
            return _error(503, f"server busy: {exc}; retry shortly", {"retry-after": "1"})
        except Stopped as exc:
            return _error(503, f"{exc}; retry against a running server")
        except Exception as exc:  # the model failed on the batch (logged by the batcher): this request only
            return _error(500, f"the model failed on this request: {type(exc).__name__}; see the server log")
        out = []
        for row in rows:
            best = int(row.argmax())
            probs = {lab: round(float(p), 6) for lab, p in zip(labels, row, strict=True)}
            chosen = label_sets(row[None, :], thresholds, labels)[0] if thresholds is not None else None
            out.append(Prediction(label=labels[best], prob=probs[labels[best]], probs=probs, labels=chosen))
        return PredictResponse(predictions=out, model=name)

    @app.get("/health", response_model=HealthResponse, summary="Is the model loaded and answering")
    async def health() -> HealthResponse:
        """The model, its labels, and counts since start; ``status`` is ``stopping`` during shutdown."""
        s = batcher.stats
        return HealthResponse(
            status="ok" if batcher.running else "stopping",
            model_loaded=True,
            model=name,
            labels=labels,
            device=str(getattr(predictor, "device", "cpu")),
            dtype=opts.dtype,
            temperature=float(getattr(predictor, "temperature", 1.0)),
            uptime_s=round(time.monotonic() - started, 3),
            requests=s.requests,
            texts=s.texts,
            batches=s.batches,
            largest_batch=s.largest_batch,
            model_s=round(s.model_s, 4),
            waiting=batcher.waiting,
            in_model=batcher.in_model,
            max_batch=opts.max_batch,
            max_texts=opts.max_texts,
        )

    app.add_middleware(BodyLimit, max_bytes=opts.max_body_bytes)  # type: ignore[arg-type]
    return app
