"""Hierarchical labelling of a label tree: the top level first, then the chosen node's children.

A job whose label set is a tree (:attr:`promptclf.labels.LabelSet.tree`) with ``tree_mode`` ``hierarchy``
is labelled level by level. Each **stage** is an ordinary job over the rows that reached one node, whose
label set is that node's children (:meth:`~promptclf.labels.LabelSet.stage`), run by the usual runner
for the provider: the chat runner (or batch runner) with its parsing and validation re-asks, or the
scoring runner, which scores only those siblings. So every prompt lists only siblings, by their own
names, and every answer is validated against them. Rows that reach a node with one child take it
without a request.

A row's result is the path of the leaf it reached (``sci/space``). Its ``pred_prob`` is the product of
the stages' probabilities when every stage had one (else none); its ``pred_probs`` holds the leaves among
the last stage's siblings, each with its path probability (the other branches' mass is not spread over
their leaves, so the values sum to the probability of the last stage's parent). A row that fails at a
stage (``invalid``, ``empty``, ``error``) keeps that status, with the stage named in its reason.

Few-shot examples (``--shots``, random selection) are the job's leaf examples: each stage shows those
under its node, labelled with the child they fall under, at most ``--shots`` per child.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from ..errors import ConfigError
from ..label_tree import SEP
from ..labels import LabelSet
from ..providers.base import Provider
from ..runs import Calibration
from .context import RunContext
from .dispatch import run_runner
from .jobs import Job, RowResult, prompt_builder
from .meter import Meter
from .options import LabelOptions
from .prompts import PromptBuilder, Shot

log = logging.getLogger(__name__)

SIMILAR_SHOTS = (
    "--shot-selection similar picks each request's examples by leaf, which a stage of hierarchical labelling "
    "does not show: use --shot-selection random, or --tree-mode flat"
)


TREE_DRY_RUN = (
    "label tree: the counts are the top-level stage's; each row then takes one more request per level below, "
    "each listing only the chosen node's children (--tree-mode flat lists every leaf in one)"
)


class _StageMeter(Meter):
    """The run's meter (the same counts and bar) that does not tick: a row is finished once, at its leaf."""

    def __init__(self, meter: Meter) -> None:  # shares the meter's state, so no Meter.__init__
        self.__dict__.update(meter.__dict__)

    def tick(self, n: int) -> None:
        """Stages do not move the bar; :func:`run_hierarchy` does when a row reaches its leaf."""


def stage_shots(shots: list[Shot], parent: str, stage: LabelSet, per_class: int) -> list[Shot]:
    """The job's leaf examples under ``parent``, each labelled with the child of ``parent`` it falls
    under, at most ``per_class`` per child, in the job's (seeded) order."""
    head = f"{parent}{SEP}" if parent else ""
    out: list[Shot] = []
    counts: dict[str, int] = defaultdict(int)
    for s in shots:
        if not s.label.startswith(head):
            continue
        child = s.label[len(head) :].split(SEP, 1)[0]
        if child in stage.names and counts[child] < per_class:
            counts[child] += 1
            out.append(Shot(s.text, child, s.row))
    return out


def top_stage(o: LabelOptions, job: Job) -> tuple[Job, PromptBuilder]:
    """The first stage of ``job`` (every row to label, the top-level labels) and its prompts: what the
    dry run renders and counts."""
    stage = job.labels.stage()
    shots = stage_shots(job.shots, "", stage, o.shots) if job.shots else []
    sub = Job(job.texts, [RowResult() for _ in job.texts], list(job.todo), None, stage, shots, [], None)
    return sub, prompt_builder(o, sub)


def run_hierarchy(ctx: RunContext[Provider], job: Job) -> Calibration | None:
    """Label ``job``'s rows stage by stage down its label tree, writing ``job.results`` (module docstring).

    Returns the first stage's calibration record with ``--calibrate`` (the top level's content-free
    scores); the deeper stages are calibrated the same way, each against its own prompt.
    """
    tree = job.labels.tree
    if tree is None:
        raise ConfigError("hierarchical labelling needs a label tree (a labels file whose entries have children)")
    if ctx.options.shot_selection == "similar" and ctx.options.shots:
        raise ConfigError(SIMILAR_SHOTS)
    stage_ctx = RunContext(ctx.options, ctx.provider, ctx.spec, ctx.store, _StageMeter(ctx.meter), ctx.run_id)
    prob: dict[int, float | None] = {row: 1.0 for row in job.todo}
    pending: dict[str, list[int]] = {"": list(job.todo)}
    calibration: Calibration | None = None
    while pending:
        reached: dict[str, list[int]] = defaultdict(list)
        for parent, rows in pending.items():
            stage = job.labels.stage(parent)
            results = _stage_results(stage_ctx, job, parent, stage, rows)
            if results is None:
                continue
            cal, out = results
            calibration = calibration or cal
            for row in rows:
                r = out[row]
                where = f"stage {parent!r}" if parent else "top-level stage"
                if r.status != "ok":
                    job.results[row] = RowResult("", None, r.status, f"{where}: {r.reason}", r.request)
                    ctx.meter.tick(1)
                    continue
                path = f"{parent}{SEP}{r.label}" if parent else r.label
                p = prob[row]
                prob[row] = p * r.prob if p is not None and r.prob is not None else None
                if tree.node(path).is_leaf:
                    job.results[row] = RowResult(
                        path, prob[row], "ok", "", r.request, _leaf_probs(job.labels, parent, p, r.probs)
                    )
                    ctx.meter.tick(1)
                else:
                    reached[path].append(row)
        pending = dict(reached)
    return calibration


def _stage_results(
    ctx: RunContext[Provider], job: Job, parent: str, stage: LabelSet, rows: list[int]
) -> tuple[Calibration | None, list[RowResult]] | None:
    """Run one stage over ``rows`` (the rows that reached ``parent``); its results by input row.

    A node with one child needs no request: every row takes it, with probability 1."""
    if not rows:
        return None
    if len(stage) == 1:
        out = [RowResult() for _ in job.texts]
        for row in rows:
            out[row] = RowResult(stage.names[0], 1.0, "ok", "", "", {stage.names[0]: 1.0})
        return None, out
    shots = stage_shots(job.shots, parent, stage, ctx.options.shots) if job.shots else []
    sub = Job(job.texts, [RowResult() for _ in job.texts], list(rows), None, stage, shots, [], None)
    log.debug("stage %r: %d rows, %d labels", parent or "(top)", len(rows), len(stage))
    cal = run_runner(ctx, sub, prompt_builder(ctx.options, sub))
    return cal, sub.results


def _leaf_probs(
    labels: LabelSet, parent: str, p_parent: float | None, probs: dict[str, float] | None
) -> dict[str, float] | None:
    """The last stage's distribution as leaf paths with path probabilities (leaves among the siblings only)."""
    if probs is None or p_parent is None or labels.tree is None:
        return None
    out = {}
    for name, q in probs.items():
        path = f"{parent}{SEP}{name}" if parent else name
        if path in labels.names:
            out[path] = p_parent * q
    return out or None
