"""Providers: the models that label, behind one small protocol (:mod:`.base`).

Contract: a provider is a :class:`ChatProvider` (messages in, JSON text out: hosted APIs and
OpenAI-compatible servers, :mod:`.hosted`) or a :class:`ScoringProvider` (one probability per
label per item: the in-process local model, :mod:`.local`); ``kind`` tells them apart, and each
declares its capabilities (batch endpoint, log-probabilities, base URL, what it loads, how it
counts tokens). The choice of provider is resolved once into a :class:`ProviderSpec`
(:mod:`.spec`), which builds it. Transport retries live in :mod:`.retry`, the batch endpoints
in :mod:`.batch_api`. SDKs and model weights load lazily, inside the provider classes, with an
install hint when missing. Providers know nothing of labeling jobs: nothing here imports
:mod:`promptclf.label`.
"""

from __future__ import annotations

from .base import ChatProvider, Provider, ScoringProvider, Usage
from .spec import DEFAULT_MODELS, ProviderSpec

__all__ = ["DEFAULT_MODELS", "ChatProvider", "Provider", "ProviderSpec", "ScoringProvider", "Usage"]
