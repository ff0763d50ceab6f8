"""Job preparation: what a labeling run will send, decided before any request.

:func:`prepare_job` validates the input frame against the options, settles the label set,
picks the few-shot examples (rows used as shots are never scored), and lists the rows to
label. It also holds the small records the runners share with the engine (:class:`RowResult`,
:class:`Task`, :class:`Stats`) and the :class:`Engine` protocol: what a runner
(:mod:`promptclf.chat_runner`, :mod:`promptclf.scoring_runner`) needs from the
:class:`~promptclf.labeling.Labeler` that drives it, so the runners never import the engine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from .data import cell_text, check_columns
from .errors import InputError
from .labels import LabelSet, infer_labels
from .options import LabelOptions
from .prompts import PromptBuilder, Shot, select_shots
from .providers import Provider
from .providers.base import Usage
from .store import Store


@dataclass
class RowResult:
    """One row's outcome: what becomes its ``pred_*`` columns."""

    label: str = ""
    prob: float | None = None
    status: str = ""  # ok | empty | invalid | error | shot
    reason: str = ""
    request: str = ""


@dataclass
class Task:
    """One request's worth of rows (a batch, or a smaller re-ask batch)."""

    rows: list[int]  # row positions in the input frame, in item-id order
    round: int = 0
    previous: dict[int, str] = field(default_factory=dict)  # row -> off-list answer from the last round


@dataclass
class Job:
    """A validated labeling job: what will be sent, decided before any request."""

    texts: list[str]
    results: list[RowResult]
    todo: list[int]  # rows to label
    gold: list[str] | None
    labels: LabelSet
    shots: list[Shot]
    warnings: list[str]


@dataclass
class Stats:
    """What a run sent, received and spent. ``cost_usd`` is money spent now; ``list_cost_usd``
    also prices cached responses, which is what the job costs per item at list price."""

    requests: int = 0
    cached_requests: int = 0
    failed_requests: int = 0
    reasks: int = 0
    transport_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    list_cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)  # every response's own latency, cached ones included
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cached_requests": self.cached_requests,
            "failed_requests": self.failed_requests,
            "reasks": self.reasks,
            "transport_retries": self.transport_retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class Engine(Protocol):
    """What a runner uses of the engine driving it (implemented by ``Labeler``)."""

    options: LabelOptions
    provider_name: str
    model: str
    run_id: str
    stats: Stats

    @property
    def provider(self) -> Provider: ...

    @property
    def store(self) -> Store: ...

    def account(self, usage: Usage, latency: float, cached: bool) -> tuple[float, float]:
        """Count one response (fetched now or from the store); returns (list cost, latency)."""
        ...

    def tick(self, bar: Any, n: int) -> None:
        """Advance the progress bar by ``n`` finished rows."""
        ...


def clip_text(text: str, limit: int) -> str:
    """An item's text as the prompt shows it: cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit]


def row_text(df: pd.DataFrame, i: int, cols: list[str]) -> str:
    """Row ``i``'s text: the one text column, or ``col: value`` lines for several."""
    if len(cols) == 1:
        return cell_text(df[cols[0]].iat[i])
    parts = [(c, cell_text(df[c].iat[i]).strip()) for c in cols]
    return "\n".join(f"{c}: {v}" for c, v in parts if v)


def _label_set(o: LabelOptions, df: pd.DataFrame, gold: list[str] | None, source: str) -> LabelSet:
    if o.labels:
        labels = LabelSet.from_dict(o.labels)
    elif gold is not None and any(gold):
        labels = infer_labels(gold)
    else:
        hint = f"column {o.label_col!r} is absent" if gold is None else f"column {o.label_col!r} is empty"
        raise InputError(
            f"{source}: no label set: pass --labels (e.g. --labels 'a,b,c' or a file), or --label-col naming a "
            f"column with example labels ({hint}; the file has: {', '.join(map(repr, df.columns))})"
        )
    if gold is not None and o.labels:
        unknown = sorted({g for g in gold if g and labels.normalize(g) is None})
        if unknown:
            raise InputError(
                f"{source}: column {o.label_col!r} has labels that are not in --labels: {', '.join(map(repr, unknown[:10]))}; "
                f"add them to --labels (or as aliases), or point --label-col elsewhere"
            )
    return labels


def _shots(
    o: LabelOptions,
    df: pd.DataFrame,
    examples: pd.DataFrame | None,
    texts: list[str],
    gold: list[str] | None,
    labels: LabelSet,
    results: list[RowResult],
    source: str,
) -> tuple[list[Shot], list[str]]:
    """Few-shot examples from ``examples`` or from the input's own gold rows (marked ``shot``)."""
    if not o.shots:
        return [], []
    if examples is not None:
        label_col = o.label_col or "label"
        check_columns(examples, [*o.text_cols, label_col], "--examples", "--text-col/--label-col")
        ex_texts = [row_text(examples, i, o.text_cols) for i in range(len(examples))]
        shots, warnings = select_shots(ex_texts, [cell_text(v) for v in examples[label_col]], o.shots, labels, o.seed)
        shots = [Shot(s.text, s.label, None) for s in shots]
    elif gold is not None:
        shots, warnings = select_shots(texts, gold, o.shots, labels, o.seed)
        for s in shots:
            results[s.row].status = "shot"  # type: ignore[index]
            results[s.row].reason = "used as a few-shot example, not scored"  # type: ignore[index]
    else:
        raise InputError(
            f"--shots {o.shots} needs labeled examples: pass --examples FILE or a --label-col in {source} "
            f"(the file has: {', '.join(map(repr, df.columns))})"
        )
    if not shots:
        raise InputError(f"--shots {o.shots}: no labeled example matches the label set {labels.names}")
    return shots, warnings


def prepare_job(o: LabelOptions, df: pd.DataFrame, examples: pd.DataFrame | None = None, source: str = "input") -> Job:
    """Validate ``df`` against the options and decide shots and items. No request is sent."""
    check_columns(df, o.text_cols, source, "--text-col")
    has_gold = o.label_col is not None and o.label_col in df.columns
    gold = [cell_text(v).strip() for v in df[o.label_col]] if has_gold and o.label_col else None
    labels = _label_set(o, df, gold, source)

    texts = [row_text(df, i, o.text_cols) for i in range(len(df))]
    results = [RowResult() for _ in range(len(df))]
    shots, warnings = _shots(o, df, examples, texts, gold, labels, results, source)

    todo = []
    for i, text in enumerate(texts):
        if results[i].status == "shot":
            continue
        if not text.strip():
            results[i] = RowResult(status="error", reason=f"empty text in {', '.join(o.text_cols)}")
        elif len(text) > o.max_item_chars:
            results[i] = RowResult(
                status="error",
                reason=f"text has {len(text):,} characters, over --max-item-chars {o.max_item_chars:,}",
            )
        else:
            todo.append(i)
    return Job(texts, results, todo, gold, labels, shots, warnings)


def prompt_builder(o: LabelOptions, job: Job) -> PromptBuilder:
    """The prompts for ``job``: its labels and shots, rendered with the options' templates."""
    return PromptBuilder(
        job.labels,
        job.shots,
        template=o.template,
        system_template=o.system_template,
        max_chars=o.max_chars,
        shot_max_chars=o.shot_max_chars,
    )
