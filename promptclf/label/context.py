"""The run context: everything a runner (chat, scoring, batch) or the dry run uses, handed down to it.

A runner never calls back into the :class:`~promptclf.label.labeler.Labeler` that drives it: it
gets the provider (typed by its kind), the store, the options, the resolved provider spec (its
name and model are part of every store key and log row) and the :class:`~promptclf.label.meter.Meter`
that counts usage, cost and latency and moves the progress bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..providers.base import ProviderBase, Usage
from ..providers.spec import ProviderSpec
from ..store import Store
from .meter import Meter
from .options import LabelOptions

P = TypeVar("P", bound=ProviderBase)
Q = TypeVar("Q", bound=ProviderBase)


@dataclass
class RunContext(Generic[P]):
    """What one labeling run hands its runner: ``RunContext[ChatProvider]`` for the chat and batch
    runners, ``RunContext[ScoringProvider]`` for the scoring runner."""

    options: LabelOptions
    provider: P
    spec: ProviderSpec
    store: Store
    meter: Meter
    run_id: str

    def using(self, provider: Q) -> RunContext[Q]:
        """The same context typed for ``provider`` (the context's own, narrowed by its ``kind``)."""
        return RunContext(self.options, provider, self.spec, self.store, self.meter, self.run_id)

    def log(
        self,
        key: str,
        outcome: str,
        error: str | None = None,
        usage: Usage | None = None,
        latency_s: float = 0.0,
        cost_usd: float = 0.0,
    ) -> None:
        """Record one attempt (``ok``, ``cached`` or ``error``) in the store, under this run."""
        u = usage or Usage()
        self.store.log(
            key, self.run_id, self.spec.name, self.spec.model, outcome, error,
            u.prompt_tokens, u.completion_tokens, latency_s, cost_usd, u.cached_prompt_tokens,
        )  # fmt: skip

    def save(
        self,
        key: str,
        payload: dict[str, Any],
        response: str,
        usage: Usage,
        latency_s: float,
        cost_usd: float,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Cache a successful response under ``key`` and log it as this run's ``ok`` attempt."""
        self.store.put(
            key, self.spec.name, self.spec.model, payload, response, usage.prompt_tokens, usage.completion_tokens,
            latency_s, cost_usd, usage.cached_prompt_tokens, logprobs,
        )  # fmt: skip
        self.log(key, "ok", None, usage, latency_s, cost_usd)
