"""The scoring runner: batches of items scored by a scoring provider (the local model).

Each batch asks the provider for one probability per label per item; the argmax is the label
and its probability is ``pred_prob``. Scores are cached in the store like chat responses.
"""

from __future__ import annotations

import json
from typing import Any

from .jobs import Engine, Job, RowResult, clip_text
from .prompts import PromptBuilder
from .providers.base import ScoreRequest, Usage
from .store import request_key


def run_scoring(engine: Engine, job: Job, prompts: PromptBuilder, bar: Any) -> None:
    """Label ``job``'s rows through the engine's scoring provider, writing ``job.results``."""
    o = engine.options
    parts = prompts.score_parts()
    system, prefix, suffix = parts.system, parts.prefix, parts.suffix
    names = job.labels.names
    provider = engine.provider
    size = o.batch_size
    # Scores differ when only the answer attends to the examples, so that is part of the key.
    answer_only = parts.examples if getattr(provider, "shot_attention", "full") == "answer" else None
    for start in range(0, len(job.todo), size):
        rows = job.todo[start : start + size]
        items = [clip_text(job.texts[i], o.max_chars) for i in rows]
        payload = {
            "provider": engine.provider_name,
            "model": engine.model,
            "system": system,
            "prefix": prefix,
            "suffix": suffix,
            "items": items,
            "labels": names,
            "answer_only_examples": answer_only,
        }
        key = request_key(payload)
        cached = None if o.no_cache else engine.store.get(key)
        if cached is not None:
            probs = json.loads(cached.response)
            engine.account(Usage(cached.prompt_tokens, cached.completion_tokens), cached.latency_s, True)
            engine.store.log(key, engine.run_id, engine.provider_name, engine.model, "cached")
        else:
            request = ScoreRequest(system, prefix, items, suffix, names, parts.examples)
            result = provider.score(request)  # type: ignore[attr-defined]
            probs = result.probs
            cost, _ = engine.account(result.usage, result.latency_s, False)
            engine.store.put(
                key,
                engine.provider_name,
                engine.model,
                {"items": len(items), "labels": names},
                json.dumps(probs),
                result.usage.prompt_tokens,
                result.usage.completion_tokens,
                result.latency_s,
                cost,
            )
            engine.store.log(
                key, engine.run_id, engine.provider_name, engine.model, "ok", None,
                result.usage.prompt_tokens, result.usage.completion_tokens, result.latency_s, cost,
            )  # fmt: skip
        for row, p in zip(rows, probs, strict=True):
            best = max(range(len(names)), key=lambda k: p[k])
            job.results[row] = RowResult(names[best], float(p[best]), "ok", "", key[:16])
        engine.tick(bar, len(rows))
