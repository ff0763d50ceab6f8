"""The providers' batch endpoints, through the ``openai`` SDK: upload a JSONL file of requests,
create a batch, poll it, download its output and error files.

OpenAI and Together speak the same protocol with small differences, kept here as a
:class:`Dialect`: Together uploads to ``/files/upload`` with ``purpose=batch-api``, wraps the
created batch in ``{"job": ...}``, spells statuses in capitals and reports ``progress`` where
OpenAI reports ``request_counts``. Any server reached with ``--base-url`` is spoken to in the
dialect of its ``--provider`` (OpenAI by default) and must answer ``GET /batches``: servers
without batch endpoints (vLLM, llama.cpp, Ollama) are refused before anything is uploaded.

Every call goes through the transport-retry layer (:mod:`promptclf.providers.retry`); SDK errors are
mapped onto :mod:`promptclf.errors` the same way as synchronous requests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ProviderError, TransientProviderError, require
from .base import ChatResult, StructuredMode, Usage, normalize_logprobs
from .breaker import CircuitBreaker
from .hosted import BASE_ENV, KEY_ENV, cached_tokens, map_openai_error, structured_output
from .retry import call_with_retries

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
DEFAULT_BASE = {"openai": "https://api.openai.com/v1", "together": "https://api.together.xyz/v1"}
# Per batch: OpenAI takes up to 50,000 requests and 200 MB per input file; stay under both.
MAX_LINES = 50_000
MAX_BYTES = 150 * 1024 * 1024


@dataclass(frozen=True)
class Dialect:
    """How one provider's batch API differs from OpenAI's."""

    upload_path: str = "/files"
    purpose: str = "batch"
    # OpenAI's models take the cap as max_completion_tokens; OpenAI-compatible servers and
    # Together read max_tokens.
    cap_field: str = "max_completion_tokens"


DIALECTS = {
    "openai": Dialect(),
    "together": Dialect(upload_path="/files/upload", purpose="batch-api", cap_field="max_tokens"),
}


@dataclass
class BatchStatus:
    """A batch as the provider reports it, normalised across dialects."""

    id: str
    status: (
        str  # lower case: validating | in_progress | finalizing | completed | failed | expired | cancelling | cancelled
    )
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    input_file_id: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass
class LineResult:
    """One line of an output or error file: the response (``result``) or why there is none (``error``)."""

    custom_id: str
    result: ChatResult | None = None
    error: str | None = None


def request_line(
    custom_id: str,
    model: str,
    messages: list[dict[str, str]],
    schema: dict[str, Any],
    mode: StructuredMode,
    max_tokens: int,
    temperature: float,
    cap_field: str,
    top_logprobs: int | None = None,
) -> dict[str, Any]:
    """One JSONL line: the chat-completions body the synchronous path sends for the same request."""
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature, cap_field: max_tokens}
    body.update(structured_output(schema, mode))
    if top_logprobs and mode != "tools":  # as the synchronous path asks (promptclf.label.confidence)
        body.update(logprobs=True, top_logprobs=top_logprobs)
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def parse_status(raw: Any, n_lines: int = 0) -> BatchStatus:
    """A batch object from either dialect (Together's create wraps it in ``job``)."""
    if not isinstance(raw, dict):
        raise ProviderError(f"batch endpoint answered {type(raw).__name__}, not a batch object: {str(raw)[:200]}")
    job = raw.get("job")
    obj: dict[str, Any] = job if isinstance(job, dict) else raw
    if not obj.get("id"):
        raise ProviderError(f"batch object without an id: {json.dumps(obj)[:300]}")
    counts = obj.get("request_counts") or {}
    total = int(counts.get("total") or 0) or n_lines
    completed, failed = int(counts.get("completed") or 0), int(counts.get("failed") or 0)
    if not counts and obj.get("progress") is not None:  # Together: percent done
        completed = round(total * float(obj["progress"]) / 100.0)
    errs = obj.get("errors")
    if isinstance(errs, dict):
        errs = errs.get("data")
    messages = []
    for e in errs if isinstance(errs, list) else ([errs] if errs else []):
        messages.append(str(e.get("message") or e.get("code") or e) if isinstance(e, dict) else str(e))
    return BatchStatus(
        id=str(obj["id"]),
        status=str(obj.get("status") or "").lower(),
        total=total,
        completed=completed,
        failed=failed,
        output_file_id=obj.get("output_file_id") or None,
        error_file_id=obj.get("error_file_id") or None,
        input_file_id=obj.get("input_file_id") or None,
        errors=messages,
    )


def parse_lines(blob: bytes) -> list[LineResult]:
    """The lines of an output or error file; a line that is not JSON is an error, never dropped silently."""
    out = []
    for n, raw in enumerate(blob.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProviderError(f"batch result file line {n} is not JSON ({exc}): {raw[:200]}") from exc
        out.append(_line_result(line))
    return out


def _line_result(line: dict[str, Any]) -> LineResult:
    cid = str(line.get("custom_id") or "")
    resp = line.get("response") or {}
    err = line.get("error")
    status = int(resp.get("status_code") or (200 if resp.get("body") else 0))
    body = resp.get("body") or {}
    if err or status != 200 or not isinstance(body, dict) or not body.get("choices"):
        detail = err or (body.get("error") if isinstance(body, dict) else None) or body
        if isinstance(detail, dict):
            detail = f"{detail.get('code') or ''} {detail.get('message') or json.dumps(detail)[:200]}".strip()
        return LineResult(cid, error=f"HTTP {status}: {detail}" if status else str(detail))
    choice = body["choices"][0]
    msg = choice.get("message") or {}
    calls = msg.get("tool_calls") or []
    if calls:
        text = str((calls[0].get("function") or {}).get("arguments") or "{}")
    else:
        text = msg.get("content") or ""
        text = text if isinstance(text, str) else json.dumps(text)
    u = body.get("usage") or {}
    usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0), cached_tokens(u))
    # Latency 0: a batch line has no latency of its own (the batch's wall time is the run's).
    logprobs = normalize_logprobs(choice.get("logprobs")) if not calls else None
    result = ChatResult(text, usage, 0.0, {"finish_reason": choice.get("finish_reason")}, logprobs=logprobs)
    return LineResult(cid, result=result)


class BatchClient:
    """The batch endpoints of one provider (``openai`` or ``together``), at its base URL."""

    def __init__(
        self,
        provider: str,
        base_url: str | None,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        retry_max_wait_s: float = 60.0,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """``breaker``: a :class:`~promptclf.providers.breaker.CircuitBreaker` every call goes through
        (``call`` and ``sleep``), so a dead endpoint stops the run instead of being retried."""
        if provider not in DIALECTS:
            raise ConfigError(f"--batch-api works with --provider openai or together, not {provider!r}")
        openai = require("openai", "hosted", "--batch-api")
        self.provider = provider
        self.dialect = DIALECTS[provider]
        self.custom_base = bool(base_url or os.environ.get(BASE_ENV[provider]))
        self.base_url = (base_url or os.environ.get(BASE_ENV[provider]) or DEFAULT_BASE[provider]).rstrip("/")
        if self.custom_base and provider == "openai":
            # OpenAI-compatible servers read max_tokens, as the synchronous path sends it there.
            self.dialect = Dialect(self.dialect.upload_path, self.dialect.purpose, "max_tokens")
        key = os.environ.get(KEY_ENV[provider]) or ("not-needed" if self.custom_base else None)
        if not key:
            raise ConfigError(
                f"--batch-api with --provider {provider} needs an API key: export {KEY_ENV[provider]}=..."
            )
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout_s)  # type: ignore[attr-defined]
        self.max_retries, self.retry_max_wait_s = max_retries, retry_max_wait_s
        self.on_retry = on_retry
        self.breaker = breaker

    def _call(self, fn: Callable[[], Any]) -> Any:
        def mapped() -> Any:
            try:
                return fn()
            except ProviderError:
                raise
            except Exception as exc:
                err = map_openai_error(exc, self.provider)
                if err is exc:
                    raise ProviderError(f"{self.provider} batch API: {type(exc).__name__}: {exc}") from exc
                raise err from exc

        b = self.breaker
        if b is None:
            return call_with_retries(mapped, self.max_retries, self.retry_max_wait_s, self.on_retry)
        try:
            return call_with_retries(
                lambda: b.call(mapped), self.max_retries, self.retry_max_wait_s, self.on_retry, sleep=b.sleep
            )
        except TransientProviderError as exc:
            b.exhausted(exc, self.max_retries + 1)  # raises if the endpoint is down
            raise

    def check_supported(self) -> None:
        """Refuse a server with no batch endpoints (asked only of ``--base-url`` servers)."""
        if not self.custom_base:
            return
        import openai

        try:
            self._call(lambda: self._client.get("/batches", cast_to=object, options={"params": {"limit": 1}}))
        except ProviderError as exc:
            cause = exc.__cause__
            status = getattr(cause, "status_code", None)
            if isinstance(cause, openai.APIStatusError) and status in (404, 405, 501):
                raise ConfigError(
                    f"--batch-api: the server at {self.base_url} has no batch endpoints (GET /batches answered "
                    f"HTTP {status}); drop --batch-api to send requests one at a time"
                ) from exc
            raise

    def upload(self, name: str, data: bytes) -> str:
        """Upload a JSONL file of requests; its file id."""
        d = self.dialect
        body: dict[str, Any] = {"purpose": d.purpose}
        if self.provider == "together":
            body.update(file_name=name, file_type="jsonl")
        raw = self._call(
            lambda: self._client.post(
                d.upload_path,
                cast_to=object,
                body=body,
                files=[("file", (name, data, "application/jsonl"))],
                options={"headers": {"Content-Type": "multipart/form-data"}},
            )
        )
        if not isinstance(raw, dict) or not raw.get("id"):
            raise ProviderError(f"file upload answered without a file id: {str(raw)[:300]}")
        return str(raw["id"])

    def create(self, input_file_id: str, metadata: dict[str, str]) -> BatchStatus:
        body = {"input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": "24h", "metadata": metadata}
        return parse_status(self._call(lambda: self._client.post("/batches", cast_to=object, body=body)))

    def retrieve(self, batch_id: str, n_lines: int = 0) -> BatchStatus:
        return parse_status(self._call(lambda: self._client.get(f"/batches/{batch_id}", cast_to=object)), n_lines)

    def find_by_input(self, input_file_id: str) -> BatchStatus | None:
        """The batch created from ``input_file_id``, if one was (a run killed right after creating it)."""
        raw = self._call(lambda: self._client.get("/batches", cast_to=object, options={"params": {"limit": 100}}))
        items = raw.get("data", []) if isinstance(raw, dict) else raw if isinstance(raw, list) else []
        for obj in items:
            if isinstance(obj, dict) and obj.get("input_file_id") == input_file_id:
                return parse_status(obj)
        return None

    def content(self, file_id: str) -> bytes:
        import httpx

        resp = self._call(lambda: self._client.get(f"/files/{file_id}/content", cast_to=httpx.Response))
        return bytes(resp.content)
