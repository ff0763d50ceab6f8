"""Jobs: what a labeling run will send, decided before any request.

:func:`plan_stream` settles, once for the whole input, the label set and the few-shot examples
(rows used as shots are never scored); :func:`chunk_job` turns each chunk of rows into a
:class:`Job`: the texts, the rows to label (rows with an empty or too long text get status
``error`` instead) and, with similar shots, each request's examples. The runners write each
row's outcome into ``Job.results`` (:class:`RowResult`); a :class:`Tally` keeps what the
summary needs across chunks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from ..data.tables import cell_text, check_columns
from ..errors import InputError
from ..labels import LabelSet, infer_labels
from ..store import Store
from .candidates import CandidateSets, CandidateStats, build_candidates, check_k
from .options import LabelOptions
from .prompts import PromptBuilder, Shot, select_shots
from .shots import SimilarShots, build_similar, cluster_order


@dataclass
class RowResult:
    """One row's outcome: what becomes its ``pred_*`` columns."""

    label: str = ""
    prob: float | None = None
    status: str = ""  # ok | empty | invalid | error | unsent | shot
    reason: str = ""
    request: str = ""
    probs: dict[str, float] | None = None  # distribution over labels (``pred_probs``), when known
    labels: list[str] | None = None  # multi-label: the row's labels (``pred_labels``); ``label`` joins them with ';'


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
    shots: list[Shot]  # the shots of every prompt; with similar shots, the pool they are picked from
    warnings: list[str]
    similar: SimilarShots | None = None  # --shot-selection similar: picks each request's shots
    candidates: CandidateSets | None = None  # --candidates K: each row's nearest labels

    def shots_for(self, rows: Sequence[int]) -> list[Shot]:
        """The few-shot examples of one request holding ``rows``: the job's shots, or the nearest to them."""
        return self.similar.for_rows(rows) if self.similar is not None else self.shots

    def request_view(self, rows: Sequence[int]) -> tuple[list[Shot] | None, LabelSet | None]:
        """What one chat request holding ``rows`` shows, where it differs from the job's prompt: its own
        shots (None: the job's) and, with ``--candidates``, its labels (the union of the rows' candidates;
        examples of labels it does not list are left out, as their answer is not on the list)."""
        shots = self.shots_for(rows) if self.similar is not None else None
        if self.candidates is None:
            return shots, None
        shown = self.candidates.shown(rows)
        names = set(shown.names)
        return [s for s in (self.shots if shots is None else shots) if s.label in names], shown

    def mark_unlabeled(self, reason: str, status: str = "error") -> None:
        """Give every row the run did not get to a status (``error``, or ``unsent`` when the provider
        stopped answering), with ``reason``: never a lost row."""
        for r in self.results:
            if not r.status:
                r.status, r.reason = status, reason


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
        labels = LabelSet.from_dict(o.labels, ordinal=o.ordinal)
        labels = labels.as_multi_label() if o.multi_label else labels
    elif gold is not None and any(gold):
        labels = infer_labels(gold, ordinal=o.ordinal, multi_label=o.multi_label)
    else:
        hint = f"column {o.label_col!r} is absent" if gold is None else f"column {o.label_col!r} is empty"
        raise InputError(
            f"{source}: no label set: pass --labels (e.g. --labels 'a,b,c' or a file), or --label-col naming a "
            f"column with example labels ({hint}; the file has: {', '.join(map(repr, df.columns))})"
        )
    if gold is not None and o.labels:
        if labels.multi_label:
            unknown = sorted({x for g in set(gold) if g for x in labels.normalize_all(g)[1]})
        else:
            unknown = sorted({g for g in gold if g and labels.normalize(g) is None})
        if unknown:
            hint = labels.ambiguous_hint(unknown)  # a label tree: a bare leaf name shared by several leaves
            raise InputError(
                f"{source}: column {o.label_col!r} has labels that are not in --labels: {', '.join(map(repr, unknown[:10]))}; "
                + (f"{hint}" if hint else "add them to --labels (or as aliases), or point --label-col elsewhere")
            )
    return labels


def one_label_warning(labels: LabelSet) -> list[str]:
    """A warning when the label set has a single label: every row can only get that label."""
    if len(labels.names) != 1:
        return []
    return [
        f"the label set has one label ({labels.names[0]!r}): every row can only get it; give two or more "
        "(--labels 'a,b'), or check --label-col"
    ]


def _few_warnings(pool: list[Shot], labels: LabelSet, shots: int) -> list[str]:
    """A warning for every class with fewer pool examples than one prompt shows."""
    counts = {name: sum(1 for s in pool if s.label == name) for name in labels.names}
    return [f"label {name!r} has {n} example(s), fewer than --shots {shots}" for name, n in counts.items() if n < shots]


def _shot_pool(
    o: LabelOptions, texts: list[str], gold: list[str], labels: LabelSet, results: list[RowResult]
) -> tuple[list[Shot], list[str]]:
    """Similar shots without --examples: a seeded stratified pool of ``--shot-pool`` labeled rows per
    class, marked ``shot`` (never scored), so a fully labeled file still leaves rows to score."""
    pool, _ = select_shots(texts, gold, o.shot_pool, labels, o.seed)
    warnings = _few_warnings(pool, labels, o.shots)
    counts = {name: sum(1 for s in pool if s.label == name) for name in labels.names}
    left = {name: 0 for name in labels.names}
    for t, g in zip(texts, gold, strict=True):
        name = labels.normalize(g) if g else None
        if name is not None and t.strip():
            left[name] += 1
    for name in labels.names:
        if o.shots <= counts[name] == left[name]:
            warnings.append(
                f"label {name!r}: all its {counts[name]} labeled rows are in the similar-shot pool (--shot-pool "
                f"{o.shot_pool}), so none of them is scored"
            )
    for s in pool:
        results[s.row].status = "shot"  # type: ignore[index]
        results[s.row].reason = "in the similar-shot pool, not scored"  # type: ignore[index]
    return pool, warnings


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
        ex_labels = [cell_text(v) for v in examples[label_col]]
        # Similar shots: the whole file is the pool (every labeled example, in file order).
        per_class = len(examples) if o.shot_selection == "similar" else o.shots
        shots, warnings = select_shots(ex_texts, ex_labels, per_class, labels, o.seed)
        if o.shot_selection == "similar":
            shots = sorted(shots, key=lambda s: s.row or 0)
            warnings = _few_warnings(shots, labels, o.shots)
        shots = [Shot(s.text, s.label, None) for s in shots]
    elif gold is not None and o.shot_selection == "similar":
        shots, warnings = _shot_pool(o, texts, gold, labels, results)
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


def _mark_todo(o: LabelOptions, texts: list[str], results: list[RowResult]) -> list[int]:
    """The rows to label; rows with an empty or too long text get status ``error`` instead."""
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
    return todo


def prompt_builder(o: LabelOptions, job: Job) -> PromptBuilder:
    """The prompts for ``job``: its labels and shots, rendered with the options' templates."""
    return PromptBuilder(
        job.labels,
        job.shots if job.similar is None else [],  # similar shots: each request passes its own
        template=o.template,
        system_template=o.system_template,
        max_chars=o.max_chars,
        shot_max_chars=o.shot_max_chars,
        candidates=o.candidates is not None,
    )


# --- a job too large for memory, labeled chunk by chunk (promptclf.label.stream) -------------


def chunk_texts(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """Every row's text (as :func:`row_text` gives it), column-wise: fast on large chunks."""
    if len(cols) == 1:
        return [cell_text(v) for v in df[cols[0]].tolist()]
    columns = [[cell_text(v).strip() for v in df[c].tolist()] for c in cols]
    return ["\n".join(f"{c}: {v}" for c, v in zip(cols, vals, strict=True) if v) for vals in zip(*columns, strict=True)]


@dataclass
class StreamPlan:
    """What a chunked run decides once, from the whole file, before its first request: the label
    set, the shots (the same for every chunk) and which input rows are shots (never scored)."""

    labels: LabelSet
    shots: list[Shot]
    shot_rows: dict[int, RowResult]  # input row -> its ``shot`` result
    warnings: list[str]


def plan_stream(
    o: LabelOptions,
    columns: list[str],
    gold: list[str] | None,
    has_text: list[bool],
    examples: pd.DataFrame | None,
    source: str,
) -> StreamPlan:
    """Label set and shots for a whole file from its label column and which rows have text.

    The same seeded selection as :func:`prepare_job` (it only looks at whether a candidate has
    text), so a file labeled in chunks gets the shots it would get in one piece. The shots'
    texts are placeholders until the caller fills them in from those rows.
    """
    stub = pd.DataFrame(columns=columns)  # error messages list the columns
    labels = _label_set(o, stub, gold, source)
    if o.candidates is not None:
        check_k(o.candidates, len(labels))
        if labels.tree is not None and o.tree_mode == "hierarchy":
            raise InputError(
                "--candidates with a label tree needs --tree-mode flat (candidates are leaves; hierarchical "
                "labelling already lists only siblings): add --tree-mode flat, or drop --candidates"
            )
    marks: dict[int, RowResult] = defaultdict(RowResult)
    shots, warnings = _shots(o, stub, examples, ["x" if t else "" for t in has_text], gold, labels, marks, source)  # type: ignore[arg-type]
    return StreamPlan(labels, shots, dict(marks), one_label_warning(labels) + warnings)


def chunk_job(
    o: LabelOptions,
    df: pd.DataFrame,
    offset: int,
    plan: StreamPlan,
    gold: list[str] | None,
    store: Store | None = None,
    progress: bool = False,
    embed: bool = True,
) -> Job:
    """The job for one chunk (input rows ``offset`` .. ``offset + len(df)``) under ``plan``.
    ``embed=False``: no similar-shot embeddings (a chunk that will not be sent)."""
    check_columns(df, o.text_cols, "input", "--text-col")
    texts = chunk_texts(df, o.text_cols)
    results = []
    for i in range(len(df)):
        mark = plan.shot_rows.get(offset + i)
        results.append(RowResult(status=mark.status, reason=mark.reason) if mark else RowResult())
    todo = _mark_todo(o, texts, results)
    similar = cands = None
    if embed and o.shot_selection == "similar" and plan.shots and todo:
        similar = build_similar(plan.shots, texts, todo, o.shots, plan.labels.names, store=store, progress=progress)
    if o.candidates is not None:
        # A chunk that will not be sent (or has nothing to label) gets no candidates, but its rows still get
        # the pred_candidates column, empty, so every chunk of the output has the same columns.
        if embed and todo:
            cands = build_candidates(plan.labels, o.candidates, texts, todo, store=store, progress=progress)
        else:
            cands = CandidateSets(plan.labels, o.candidates, {})
    if similar is not None or (cands is not None and cands.row_vecs):
        # Similar texts share a batch: they share similar shots, and their candidates overlap.
        vecs = similar.vectors(todo) if similar is not None else cands.vectors(todo)  # type: ignore[union-attr]
        todo = [todo[k] for k in cluster_order(vecs, o.batch_size)]
    part = gold[offset : offset + len(df)] if gold is not None else None
    return Job(texts, results, todo, part, plan.labels, plan.shots, plan.warnings, similar, cands)


@dataclass
class Tally:
    """What a run's summary needs of its rows (label, status, gold), kept across chunks."""

    labels: LabelSet
    n_shots: int
    gold: list[str] | None
    pred: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    prob: list[float | None] = field(default_factory=list)  # the label's confidence, for calibration
    score: list[float | None] = field(default_factory=list)  # ordinal sets: the expected score (pred_score)
    rerun: int = 0  # rows a rerun of the same command sends again: failed requests, unsent rows
    candidates: list[list[str] | None] = field(default_factory=list)  # --candidates: each row's own
    candidate_stats: CandidateStats | None = None

    def add(self, job: Job) -> None:
        self.pred.extend(r.label for r in job.results)
        self.status.extend(r.status for r in job.results)
        self.prob.extend(r.prob for r in job.results)
        if self.labels.ordinal:
            self.score.extend(self.labels.expected_score(r.probs, r.label) if r.label else None for r in job.results)
        if job.candidates is not None:
            by_row = job.candidates.by_row
            self.candidates.extend(by_row.get(i) for i in range(len(job.results)))
            total = self.candidate_stats or CandidateStats(job.candidates.k)
            total.add(job.candidates.stats)
            self.candidate_stats = total
        else:
            self.candidates.extend(None for _ in job.results)
        # Rows with a bad text are not in todo: a rerun would fail them the same way.
        self.rerun += sum(1 for i in job.todo if job.results[i].status in ("error", "unsent"))
