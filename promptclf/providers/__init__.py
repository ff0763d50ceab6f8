"""Provider selection. SDKs and model weights load lazily, inside the provider classes."""

from __future__ import annotations

import os
import sys

from ..label.options import DEFAULT_MODELS, LabelOptions
from .base import ChatProvider, Provider, ScoringProvider, Usage

__all__ = ["ChatProvider", "Provider", "ScoringProvider", "Usage", "make_provider", "resolve_provider"]


def resolve_provider(opts: LabelOptions, announce: bool = True) -> tuple[str, str]:
    """(provider name, model) after ``--provider auto`` and default models are applied.

    auto: a ``--base-url`` means an OpenAI-compatible server; else Together if
    TOGETHER_API_KEY is set, else OpenAI if OPENAI_API_KEY is set, else the local model.
    """
    name = opts.provider
    if name == "auto":
        if opts.base_url:
            name, why = "openai", "--base-url is set (OpenAI-compatible server)"
        elif os.environ.get("TOGETHER_API_KEY"):
            name, why = "together", "TOGETHER_API_KEY is set"
        elif os.environ.get("OPENAI_API_KEY"):
            name, why = "openai", "OPENAI_API_KEY is set"
        else:
            name, why = "local", "no TOGETHER_API_KEY or OPENAI_API_KEY; using the embedded local model"
        if announce:
            print(f"promptclf: provider {name} ({why})", file=sys.stderr)
    model = opts.model or DEFAULT_MODELS[name]
    return name, model


def make_provider(opts: LabelOptions, announce: bool = True) -> Provider:
    name, model = resolve_provider(opts, announce=announce)
    if name == "local":
        from .local.provider import LocalProvider

        return LocalProvider(model=model, shot_attention=opts.shot_attention, items_per_pass=opts.items_per_pass)
    from .hosted import HostedProvider

    return HostedProvider(
        name,
        model,
        base_url=opts.base_url,
        timeout_s=opts.timeout_s,
        temperature=opts.temperature,
        top_logprobs=opts.top_logprobs,
    )
