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


@runtime_checkable
class Provider(Protocol):
    # Read-only in the protocol so a class attribute ``kind = "scoring"`` satisfies it.
    @property
    def name(self) -> str: ...  # "openai", "together", "local"

    @property
    def model(self) -> str: ...

    @property
    def kind(self) -> Literal["chat", "scoring"]: ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (exact where the tokenizer is local, else an estimate)."""
        ...


class ChatProvider(Provider, Protocol):
    def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], mode: StructuredMode, max_tokens: int
    ) -> ChatResult:
        """Send one request; raise TransientProviderError / AuthenticationError / ProviderError."""
        ...


class ScoringProvider(Provider, Protocol):
    def score(self, request: ScoreRequest) -> ScoreResult: ...


def estimate_tokens(text: str) -> int:
    """Rough token count for hosted models whose tokenizer is not available offline (≈4 chars/token)."""
    return max(1, (len(text) + 3) // 4)
