"""The provider protocol: the one small surface the labeling engine talks to.

Two kinds of provider exist because two kinds of model answer differently:

* **chat** providers (hosted APIs, OpenAI-compatible servers) take messages and return
  text that should be JSON matching the response schema; the engine parses and
  validates it, so every provider is held to the same schema.
* **scoring** providers (the in-process local model) return one probability per label
  per item by scoring each label's log-likelihood; their answer is always a valid label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass
class Usage:
    """Token counts of one request (or a sum of many).

    ``cached_prompt_tokens`` is the part of ``prompt_tokens`` the provider served from its
    prompt cache (a repeated prefix; OpenAI's ``prompt_tokens_details.cached_tokens``),
    billed at the cached-input rate where the price table has one.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
        )


@dataclass
class ChatResult:
    text: str
    usage: Usage
    latency_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)
    # The answer's token log-probabilities in OpenAI's ``logprobs.content`` shape (token,
    # logprob, bytes, top_logprobs), when the provider returned them; None otherwise.
    logprobs: list[dict[str, Any]] | None = None


def normalize_logprobs(raw: Any) -> list[dict[str, Any]] | None:
    """A provider's ``logprobs`` as OpenAI's ``content`` list, or None when there are none.

    Takes OpenAI's chat form (``{"content": [{token, logprob, bytes, top_logprobs}]}``, or the
    list itself) and the completions form some servers use (``{"tokens", "token_logprobs",
    "top_logprobs": [{token: logprob}]}``). Pydantic objects are turned into dicts.
    """
    if raw is None:
        return None
    if hasattr(raw, "model_dump"):
        raw = raw.model_dump()
    if isinstance(raw, dict) and isinstance(raw.get("content"), list):
        raw = raw["content"]
    elif isinstance(raw, dict) and isinstance(raw.get("tokens"), list) and isinstance(raw.get("token_logprobs"), list):
        tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
        raw = [
            {
                "token": t,
                "logprob": lp,
                "top_logprobs": [{"token": k, "logprob": v} for k, v in (top or {}).items()],
            }
            for t, lp, top in zip(raw["tokens"], raw["token_logprobs"], tops, strict=False)
        ]
    if not isinstance(raw, list) or not raw:
        return None
    out = [e.model_dump() if hasattr(e, "model_dump") else e for e in raw]
    return out if all(isinstance(e, dict) for e in out) else None


# How a chat provider is asked for structured output, strongest first.
StructuredMode = Literal["json_schema", "json_object", "tools", "prompt"]


@dataclass
class ScoreRequest:
    """Score ``labels`` as the answer to ``prefix + item + suffix`` for each item.

    ``system`` and ``prefix`` are the same for every item of a job (instructions and
    few-shot examples), so a provider can encode them once and reuse the key/value cache.
    ``examples``: the (start, end) character span of the few-shot examples inside
    ``prefix``, when there are any; a provider may use it to let only the answer, not the
    item, attend to them (the local provider's ``shot_attention="answer"``).
    """

    system: str
    prefix: str
    items: list[str]
    suffix: str
    labels: list[str]
    examples: tuple[int, int] | None = None


@dataclass
class ScoreResult:
    probs: list[list[float]]  # len(items) x len(labels), rows sum to 1
    usage: Usage
    latency_s: float = 0.0


# What the local model lets attend to a request's few-shot examples (ScoreRequest.examples):
# "full", the exact prompt; "answer", only the answer, not the item.
ShotAttention = Literal["full", "answer"]


@runtime_checkable
class ProviderBase(Protocol):
    """What every provider declares. Read-only properties in the protocol, so class attributes
    (``kind = "scoring"``) and plain instance attributes both satisfy it."""

    @property
    def name(self) -> str: ...  # "openai", "together", "local"

    @property
    def model(self) -> str: ...

    @property
    def base_url(self) -> str | None:
        """The server requests go to when it is not the provider's own (``--base-url``); None otherwise."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (exact where the tokenizer is local, else an estimate)."""
        ...

    def load(self) -> None:
        """Get ready to answer now (a local model loads its weights; a hosted one has nothing to do),
        so a model that cannot load fails before any progress bar."""
        ...


@runtime_checkable
class ChatProvider(ProviderBase, Protocol):
    """Messages in, text out (JSON the engine parses and validates against the response schema)."""

    @property
    def kind(self) -> Literal["chat"]: ...

    @property
    def batch_api(self) -> bool:
        """Whether the provider has a batch endpoint (OpenAI's or Together's batch API; a ``base_url``
        server is asked at run time whether it has one)."""
        ...

    @property
    def top_logprobs(self) -> int | None:
        """Token alternatives asked for with each answer, for label confidence; None when the answers
        carry no log-probabilities (not asked, or the server rejected them)."""
        ...

    def default_mode(self) -> StructuredMode:
        """The structured-output mode to use when none is asked for."""
        ...

    def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], mode: StructuredMode, max_tokens: int
    ) -> ChatResult:
        """Send one request; raise TransientProviderError / AuthenticationError / ProviderError."""
        ...


@runtime_checkable
class ScoringProvider(ProviderBase, Protocol):
    """Items in, one probability per label per item out: the answer is always a valid label."""

    @property
    def kind(self) -> Literal["scoring"]: ...

    @property
    def shot_attention(self) -> ShotAttention:
        """What attends to the few-shot examples; "answer" changes the scores, so it is part of the store key."""
        ...

    @property
    def max_item_tokens(self) -> int | None:
        """Each item is cut to its first this-many tokens (None: never cut)."""
        ...

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        """Tokens of the prompt before the item (encoded once per prefix) and after it (paid per item)."""
        ...

    def score(self, request: ScoreRequest) -> ScoreResult: ...


# A provider is one of the two kinds; ``provider.kind`` tells them apart (and narrows the type).
Provider = ChatProvider | ScoringProvider


def estimate_tokens(text: str) -> int:
    """Rough token count for hosted models whose tokenizer is not available offline (≈4 chars/token)."""
    return max(1, (len(text) + 3) // 4)
