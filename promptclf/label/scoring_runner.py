"""The scoring runner: batches of items scored by a scoring provider (the local model).

Each batch asks the provider for one probability per label per item; the argmax is the label
and its probability is ``pred_prob``. Scores are cached in the store like chat responses.

With ``calibrate`` (contextual calibration, Zhao et al. 2021, "Calibrate before use"), the
same prompt is first scored on content-free inputs (:data:`CONTENT_FREE`), once per job and
cached like any batch; every item's probabilities are then divided by their mean and
renormalised (:func:`contextual_calibration`). The store keeps the raw scores, so a run with
and one without calibration share one scoring pass.

**Multi-label** (:func:`run_multi_label`): every label is a yes/no question of its own
(``prompts/score_multi.j2``, the label in the shared prefix, so each label's prefix is encoded once);
``P(yes)`` is ``yes`` against ``no`` renormalised, and a label is chosen when it is at least
:data:`THRESHOLD`. ``pred_probs`` holds every label's ``P(yes)``, ``pred_prob`` the confidence of the
least sure of the decisions (``max(p, 1 - p)``). ``--calibrate`` divides each label's yes/no by what its
prompt gives the content-free inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..providers.base import ScoreRequest, ScoringProvider, Usage
from ..runs import Calibration
from ..store import request_key
from .context import RunContext
from .jobs import Job, RowResult, clip_text
from .prompts import PromptBuilder, ScoreParts, Shot

# The content-free inputs of Zhao et al. (2021): texts that carry no evidence for any label.
CONTENT_FREE = ("N/A", "", "[MASK]")
# Multi-label: the answers of each label's question, and the P(yes) at which the label is chosen
# (yes and no renormalised, so 0.5 is where the model leans neither way; not tuned to any set).
YES_NO = ["yes", "no"]
THRESHOLD = 0.5


def contextual_calibration(probs: list[list[float]], content_free: list[list[float]]) -> list[list[float]]:
    """Each row of ``probs`` divided by the mean of ``content_free`` rows, then renormalised to sum to 1.

    The mean is the prompt's bias: what it gives each label when the text says nothing.
    Dividing by it makes a content-free input uniform. A label the content-free inputs give
    (numerically) no mass is floored at 1e-12 rather than divided by zero.
    """
    import numpy as np

    bias = np.maximum(np.asarray(content_free, dtype=float).mean(axis=0), 1e-12)
    p = np.asarray(probs, dtype=float) / bias
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.asarray(probs, dtype=float), where=total > 0).tolist()


def _scores(
    ctx: RunContext[ScoringProvider], parts: ScoreParts, items: list[str], names: list[str]
) -> tuple[list[list[float]], str]:
    """Raw probabilities for ``items`` (from the store when cached, else from the provider) and the request key."""
    provider = ctx.provider
    # Scores differ when only the answer attends to the examples, so that is part of the key.
    answer_only = parts.examples if provider.shot_attention == "answer" else None
    payload = {
        "provider": ctx.spec.name,
        "model": ctx.spec.model,
        "system": parts.system,
        "prefix": parts.prefix,
        "suffix": parts.suffix,
        "items": items,
        "labels": names,
        "answer_only_examples": answer_only,
    }
    key = request_key(payload)
    cached = None if ctx.options.no_cache else ctx.store.get(key)
    if cached is not None:
        ctx.meter.account(Usage(cached.prompt_tokens, cached.completion_tokens), cached.latency_s, True)
        ctx.log(key, "cached")
        return json.loads(cached.response), key
    request = ScoreRequest(parts.system, parts.prefix, items, parts.suffix, names, parts.examples)
    result = provider.score(request)
    cost = ctx.meter.account(result.usage, result.latency_s, False)
    usage = Usage(result.usage.prompt_tokens, result.usage.completion_tokens)  # scores have no prompt cache
    ctx.save(key, {"items": len(items), "labels": names}, json.dumps(result.probs), usage, result.latency_s, cost)
    return result.probs, key


@dataclass
class ScoreGroup:
    """One scoring request: its prompt, its rows and the labels it scores (in label-set order)."""

    parts: ScoreParts
    rows: list[int]
    names: list[str]


def score_groups(job: Job, prompts: PromptBuilder, size: int) -> list[ScoreGroup]:
    """The requests of a scoring job, in batches of at most ``size`` rows.

    One shared prompt for all rows, or, with similar-example shots, every row its own nearest
    examples, and with ``--candidates`` its own labels, so its own prompt: rows whose prompts are
    identical share a request (and the provider's prefix cache), in the job's order; the rest pay
    for their prefix each.
    """
    names = job.labels.names
    if job.similar is None and job.candidates is None:
        parts = prompts.score_parts()
        return [ScoreGroup(parts, job.todo[s : s + size], names) for s in range(0, len(job.todo), size)]
    per_row = job.similar.for_each(job.todo) if job.similar is not None else [job.shots] * len(job.todo)
    cands = job.candidates
    Sig = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]  # (labels, shots) of one prompt
    groups: dict[Sig, list[int]] = {}
    shots_of: dict[Sig, list[Shot]] = {}
    for row, shots in zip(job.todo, per_row, strict=True):
        # --candidates: the row's own labels, in label-set order (so equal sets render equal prompts);
        # examples of labels the prompt does not list are left out.
        own = cands.of_row(row).names if cands is not None else names
        shots = [s for s in shots if s.label in own] if cands is not None else shots
        sig = (tuple(own), tuple((s.text, s.label) for s in shots))
        groups.setdefault(sig, []).append(row)
        shots_of.setdefault(sig, shots)
    out: list[ScoreGroup] = []
    for sig, rows in groups.items():
        own = list(sig[0])
        shown = cands.subset(own) if cands is not None else None
        parts = prompts.score_parts(shots_of[sig], labels=shown)
        out.extend(ScoreGroup(parts, rows[s : s + size], own) for s in range(0, len(rows), size))
    return out


def run_scoring(ctx: RunContext[ScoringProvider], job: Job, prompts: PromptBuilder) -> Calibration | None:
    """Label ``job``'s rows through the context's scoring provider, writing ``job.results``.

    Returns the calibration record with ``calibrate`` (the content-free inputs and the mean
    distribution they got, which every item was divided by), else None.
    """
    if job.labels.multi_label:
        return run_multi_label(ctx, job, prompts)
    o = ctx.options
    all_names = job.labels.names
    size = o.batch_size
    # Content-free scores per distinct prompt, scored once (one prompt per job, unless every row
    # has its own similar shots or candidates): they must see exactly the prompt the items see.
    content_free: dict[tuple[str, str, str], tuple[list[str], list[list[float]]]] = {}
    for group in score_groups(job, prompts, size):
        parts, rows, names = group.parts, group.rows, group.names
        items = [clip_text(job.texts[i], o.max_chars) for i in rows]
        prompt = (parts.system, parts.prefix, parts.suffix)
        if o.calibrate and prompt not in content_free:
            content_free[prompt] = (names, _scores(ctx, parts, list(CONTENT_FREE), names)[0])
        probs, key = _scores(ctx, parts, items, names)
        if o.calibrate:
            probs = contextual_calibration(probs, content_free[prompt][1])
        for row, p in zip(rows, probs, strict=True):
            best = max(range(len(names)), key=lambda k: p[k])
            # The full distribution over labels goes to pred_probs (calibrated when --calibrate);
            # with --candidates the labels the row was not scored on get 0.
            scored = dict(zip(names, p, strict=True))
            dist = {name: float(scored.get(name, 0.0)) for name in all_names}
            job.results[row] = RowResult(names[best], float(p[best]), "ok", "", key[:16], dist)
        if job.candidates is not None:
            job.candidates.stats.count(job.candidates.subset(names), [job.results[r].label for r in rows])
        ctx.meter.tick(len(rows))
    if not content_free:
        return None
    # What the items were divided by: the mean over content-free inputs, averaged over the prompts
    # that scored each label (one prompt per job, unless prompts differ per row).
    sums: dict[str, list[float]] = {}
    for names, cf in content_free.values():
        for k, name in enumerate(names):
            sums.setdefault(name, []).append(sum(row[k] for row in cf) / len(cf))
    return Calibration(
        method="contextual (Zhao et al. 2021)",
        content_free=list(CONTENT_FREE),
        prompts=len(content_free),
        probs={name: sum(sums[name]) / len(sums[name]) for name in all_names if name in sums},
    )


def run_multi_label(ctx: RunContext[ScoringProvider], job: Job, prompts: PromptBuilder) -> Calibration | None:
    """Label a multi-label ``job``: each label's yes/no for every row (module docstring)."""
    o = ctx.options
    names = job.labels.names
    parts = {lab.name: prompts.label_score_parts(lab) for lab in job.labels}
    cands = job.candidates
    content_free = {n: _scores(ctx, parts[n], list(CONTENT_FREE), YES_NO)[0] for n in names} if o.calibrate else {}
    for start in range(0, len(job.todo), o.batch_size):
        rows = job.todo[start : start + o.batch_size]
        items = [clip_text(job.texts[i], o.max_chars) for i in rows]
        yes: dict[str, list[float]] = {n: [0.0] * len(rows) for n in names}
        keys = []
        for n in names:
            # --candidates: each label is asked about only for the rows it is a candidate of (P(yes) 0 elsewhere).
            asked = [k for k, r in enumerate(rows) if cands is None or n in cands.by_row[r]]
            if not asked:
                continue
            probs, key = _scores(ctx, parts[n], [items[k] for k in asked], YES_NO)
            if o.calibrate:
                probs = contextual_calibration(probs, content_free[n])
            for k, p in zip(asked, probs, strict=True):
                yes[n][k] = float(p[0])
            keys.append(key)
        request = request_key({"labels": keys})[:16]  # one id for the requests that decided the rows
        for k, row in enumerate(rows):
            dist = {n: yes[n][k] for n in names}
            chosen = [n for n in names if dist[n] >= THRESHOLD]
            sure = min(max(p, 1.0 - p) for p in dist.values())
            job.results[row] = RowResult(";".join(chosen), sure, "ok", "", request, dist, chosen)
            if cands is not None:
                cands.stats.count(cands.of_row(row), chosen)
        ctx.meter.tick(len(rows))
    if not content_free:
        return None
    return Calibration(
        method="contextual (Zhao et al. 2021), per label: yes/no",
        content_free=list(CONTENT_FREE),
        prompts=len(names),
        # each label's mean P(yes) on the content-free inputs: what its yes/no was divided by
        probs={n: sum(p[0] for p in cf) / len(cf) for n, cf in content_free.items()},
    )
