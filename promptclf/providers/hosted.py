"""Hosted chat providers through LangChain: Together (``ChatTogether``) and OpenAI or any
OpenAI-compatible server (``ChatOpenAI`` with ``--base-url``: vLLM, llama.cpp, Ollama).

The SDK's own retries are switched off (``max_retries=0``): transport retries are done
once, in :mod:`promptclf.providers.retry`, where Retry-After and bad keys are handled the same way
for every provider. SDK exceptions are mapped onto :mod:`promptclf.errors` here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Literal

from ..errors import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderError,
    ResponseFormatError,
    TransientProviderError,
    require,
)
from .base import ChatResult, StructuredMode, Usage, estimate_tokens, normalize_logprobs

log = logging.getLogger(__name__)

KEY_ENV = {"together": "TOGETHER_API_KEY", "openai": "OPENAI_API_KEY"}
BASE_ENV = {"together": "TOGETHER_API_BASE", "openai": "OPENAI_BASE_URL"}


def _retry_after(exc: Exception) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def map_openai_error(exc: Exception, provider: str) -> Exception:
    """Turn an ``openai`` SDK exception into the promptclf error the retry layer understands."""
    import openai

    env = KEY_ENV.get(provider, "OPENAI_API_KEY")
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return AuthenticationError(f"{provider} rejected the API key (HTTP {exc.status_code}); check {env}")
    if isinstance(exc, openai.RateLimitError):
        return TransientProviderError("rate limited (HTTP 429)", retry_after=_retry_after(exc), status=429)
    if isinstance(exc, openai.APITimeoutError):
        return TransientProviderError("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderConnectionError(f"connection failed: {exc.__cause__ or exc}")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return TransientProviderError(f"server error (HTTP {exc.status_code})", _retry_after(exc), exc.status_code)
        return ProviderError(f"{provider} rejected the request (HTTP {exc.status_code}): {str(exc)[:300]}")
    if isinstance(exc, json.JSONDecodeError):  # body cut mid-way by a proxy or a dropped connection
        return TransientProviderError(f"malformed response body: {exc}")
    return exc


def _is_timeout(exc: Exception) -> bool:
    """A client-side timeout (LangChain wraps openai's APITimeoutError in a subclass of its own)."""
    import openai

    return isinstance(exc, openai.APITimeoutError)


def _length_limited(exc: Exception) -> ChatResult | None:
    """The partial completion inside openai's LengthFinishReasonError, as a ChatResult."""
    completion = getattr(exc, "completion", None)
    if type(exc).__name__ != "LengthFinishReasonError" or completion is None:
        return None
    choice = completion.choices[0] if completion.choices else None
    text = (choice.message.content or "") if choice is not None else ""
    u = completion.usage
    details = getattr(u, "prompt_tokens_details", None)
    usage = Usage(
        int(getattr(u, "prompt_tokens", 0) or 0),
        int(getattr(u, "completion_tokens", 0) or 0),
        int(getattr(details, "cached_tokens", 0) or 0),
    )
    return ChatResult(text=text, usage=usage, raw={"finish_reason": "length"})


def structured_output(schema: dict[str, Any], mode: StructuredMode) -> dict[str, Any]:
    """The request fields that ask for structured output in ``mode`` (``response_format`` or
    ``tools``). The batch runner writes the same fields into each batch line."""
    if mode == "json_schema":
        spec = {"name": "labels", "schema": schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": spec}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if mode == "tools":
        tool = {"type": "function", "function": {"name": "record_labels", "parameters": schema}}
        return {"tools": [tool], "tool_choice": {"type": "function", "function": {"name": "record_labels"}}}
    return {}


def cached_tokens(usage: dict[str, Any]) -> int:
    """Prompt tokens served from the provider's cache, from a usage dict in any of the shapes
    seen: LangChain's ``input_token_details.cache_read``, OpenAI's
    ``prompt_tokens_details.cached_tokens``, or a top-level ``cached_tokens``."""
    for outer, inner in (("input_token_details", "cache_read"), ("prompt_tokens_details", "cached_tokens")):
        details = usage.get(outer)
        if isinstance(details, dict) and details.get(inner):
            return int(details[inner])
    return int(usage.get("cached_tokens") or 0)


class HostedProvider:
    """A chat provider backed by a LangChain chat model (a :class:`~promptclf.providers.base.ChatProvider`)."""

    kind: Literal["chat"] = "chat"
    # OpenAI and Together have batch endpoints; a --base-url server is asked at run time.
    batch_api = True

    def __init__(
        self,
        name: str,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        temperature: float = 0.0,
        top_logprobs: int | None = 5,
    ) -> None:
        if name not in KEY_ENV:
            raise ProviderError(f"unknown hosted provider {name!r}; use together or openai")
        self.name = name
        self.model = model
        self.base_url = base_url or os.environ.get(BASE_ENV[name]) or None
        # Token log-probabilities for label confidence (promptclf.label.confidence): asked for with
        # ``top_logprobs`` alternatives (None or 0: not asked). Not asked any more, for the rest of
        # the run, once the server rejects the parameter and accepts the request without it.
        self._top_logprobs = top_logprobs or None
        self.logprobs_rejected: str | None = None
        self._hung: set[int] = set()  # requests a server timed out on while asked for logprobs
        env = KEY_ENV[name]
        key = os.environ.get(env)
        if not key:
            if self.base_url:
                key = "not-needed"  # local OpenAI-compatible servers usually accept any key
            else:
                raise AuthenticationError(f"--provider {name} needs an API key: export {env}=...")
        common: dict[str, Any] = {"model": model, "temperature": temperature, "max_retries": 0, "timeout": timeout_s}
        if name == "together":
            mod = require("langchain_together", "hosted", "--provider together")
            if self.base_url:
                common["base_url"] = self.base_url
            self._llm = mod.ChatTogether(api_key=key, **common)  # type: ignore[attr-defined]
        else:
            mod = require("langchain_openai", "hosted", "--provider openai")
            if self.base_url:
                common["base_url"] = self.base_url
            self._llm = mod.ChatOpenAI(api_key=key, **common)  # type: ignore[attr-defined]

    @property
    def top_logprobs(self) -> int | None:
        """Alternatives asked for per answer token; None when not asked or the server rejected them."""
        return None if self.logprobs_rejected is not None else self._top_logprobs

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def load(self) -> None:
        """Nothing to load: the model runs at the provider."""

    def default_mode(self) -> StructuredMode:
        # OpenAI's strict json_schema is its strongest mode; Together and most
        # OpenAI-compatible servers (vLLM, llama.cpp) accept json_object with a schema.
        if self.name == "openai" and not self.base_url:
            return "json_schema"
        return "json_object"

    def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], mode: StructuredMode, max_tokens: int
    ) -> ChatResult:
        llm = self._llm
        if self.base_url and self.name == "openai":
            # ChatOpenAI sends the cap as max_completion_tokens, which OpenAI-compatible
            # servers such as llama-cpp-python ignore (they then generate until the context
            # is full); max_tokens in the body is understood by all of them.
            kwargs: dict[str, Any] = {"extra_body": {"max_tokens": max_tokens}}
        else:
            kwargs = {"max_tokens": max_tokens}
        kwargs.update(structured_output(schema, mode))
        # OpenAI's form (Together and vLLM/llama.cpp take it too). Tool calls carry no logprobs.
        chat = [(m["role"], m["content"]) for m in messages]
        fingerprint = hash((tuple(chat), max_tokens))
        asked = self.top_logprobs is not None and mode != "tools" and fingerprint not in self._hung
        if asked:
            kwargs.update(logprobs=True, top_logprobs=self.top_logprobs)
        start = time.perf_counter()
        try:
            try:
                msg = llm.bind(**kwargs).invoke(chat)
            except Exception as exc:
                if asked and self.base_url and _is_timeout(exc):
                    # llama-cpp-python's server never answers a request that asks for logprobs once the
                    # answer reaches max_tokens: the transport retry of this request goes without them.
                    self._hung.add(fingerprint)
                if not (asked and getattr(exc, "status_code", None) in (400, 422)):
                    raise
                # Maybe the parameter it rejects is logprobs: ask again without it, and if that
                # is accepted, never send it again this run (one warning, no label is lost).
                plain = {k: v for k, v in kwargs.items() if k not in ("logprobs", "top_logprobs")}
                msg = llm.bind(**plain).invoke(chat)
                self._reject_logprobs(exc)
        except Exception as exc:
            truncated = _length_limited(exc)
            if truncated is not None:
                # The SDK refuses to parse a response cut at max_tokens; the engine salvages
                # its complete items and re-asks the rest, so hand the text over.
                truncated.latency_s = time.perf_counter() - start
                return truncated
            mapped = map_openai_error(exc, self.name)
            if mapped is exc:
                raise ProviderError(f"{self.name} request failed: {type(exc).__name__}: {exc}") from exc
            raise mapped from exc
        latency = time.perf_counter() - start
        meta = getattr(msg, "usage_metadata", None) or {}
        usage = Usage(int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0)), cached_tokens(meta))
        if mode == "tools":
            calls = getattr(msg, "tool_calls", None) or []
            if not calls:
                raise ResponseFormatError("the model did not call the record_labels tool")
            text = json.dumps(calls[0].get("args", {}))
        else:
            text = msg.content if isinstance(msg.content, str) else json.dumps(msg.content)
        meta_r = getattr(msg, "response_metadata", None) or {}
        finish = meta_r.get("finish_reason")
        logprobs = normalize_logprobs(meta_r.get("logprobs")) if mode != "tools" else None
        return ChatResult(text=text, usage=usage, latency_s=latency, raw={"finish_reason": finish}, logprobs=logprobs)

    def _reject_logprobs(self, exc: Exception) -> None:
        if self.logprobs_rejected is None:
            status = getattr(exc, "status_code", "?")
            self.logprobs_rejected = f"HTTP {status}: {str(exc)[:200]}"
            log.warning(
                "%s rejected token log-probabilities (HTTP %s); labeling on without them for the rest of this run "
                "(pred_prob and pred_probs stay empty)",
                self.name,
                status,
            )
