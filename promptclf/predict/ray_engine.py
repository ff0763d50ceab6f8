"""``predict --engine ray``: a student over a sharded corpus on a Ray cluster, one Parquet shard out per shard in.

    run = predict_shards("runs/student", "corpus/", "corpus.pred/", RayOptions(workers=2))

The pipeline is Ray Data: the shard list -> :func:`~.ray_worker.read_shards` (tasks: texts in chunks,
then a marker with the row count or the reason the shard could not be read) -> ``map_batches`` over an
actor pool of :class:`~.ray_worker.ShardPredictor` (the student loads once per worker actor) -> the
driver, which gets back row indices and predictions only. When all of a shard's rows are in, a Ray
task writes its output (:func:`~.shard_output.write_shard`: the input reread, predictions added,
temporary file renamed into place). So:

- a worker killed mid-run: Ray restarts the actor and runs its batch again; rows that come back twice
  land on the same index, so the output holds every row once;
- a corrupt shard: its marker carries the error; the other shards finish, then one InputError names it;
- a rerun skips every shard whose output's footer says it is finished (:func:`~.shards.check_done`).

Without ``address`` a local cluster starts on 127.0.0.1 with one CPU per core and a capped object
store; with GPUs in the cluster each worker takes one GPU.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ..errors import InputError, PromptclfError, require
from .loader import check_dtype, default_text_col, predictor_labels, predictor_thresholds
from .options import RayOptions
from .shard_output import ShardTally, write_shard
from .shards import (
    SUMMARY_NAME,
    Shard,
    ShardStamp,
    check_done,
    clean_temporaries,
    discover_shards,
    fingerprint,
    plan_outputs,
)

log = logging.getLogger("promptclf.predict.ray")

BLOCK_BYTES = 1024 * 1024  # Ray Data blocks of texts: ~5,000 short texts, ~1,000 web pages


class ShardResult(BaseModel):
    name: str
    status: Literal["done", "skipped", "failed"]
    rows: int | None = None
    error: str | None = None


class ShardedRun(BaseModel):
    """What ``predict_shards`` did; also written to ``OUT/_promptclf_predict.json``."""

    engine: Literal["ray"] = "ray"
    student: str
    input: str
    output: str
    address: str | None
    workers: int
    gpus_per_worker: float
    shards: list[ShardResult]
    rows: int  # rows predicted by this run (skipped shards not counted)
    wall_s: float
    items_per_s: float | None
    first_row_s: float | None  # from the start to the first prediction back: cluster start-up and student loads
    worker_peak_rss_mb: dict[str, int]  # worker process id -> its peak resident memory

    @property
    def failed(self) -> list[ShardResult]:
        return [s for s in self.shards if s.status == "failed"]


def _object_store_bytes(mb: int | None) -> int:
    if mb:
        return mb * 1024 * 1024
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(2 * 1024**3, max(256 * 1024**2, total // 10)))


def _quiet_ray() -> None:
    # Ray's own notices (the token-auth default, the disabled progress bars, execution plans) are not
    # the user's business here; its errors still show, and the logs under /tmp/ray keep the rest.
    for name in ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"The minimum number of concurrent actors", category=UserWarning)


def _worker_env() -> dict[str, str]:
    env = {
        k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE") if k in os.environ
    }
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def start_local_cluster(num_cpus: int | None = None, object_store_mb: int | None = None) -> Any:
    """Start a one-machine Ray cluster reachable on 127.0.0.1 only; returns the ``ray`` module.

    Ray otherwise binds every interface and advertises the machine's network address; its local-only
    mode (the one it uses on macOS and Windows) keeps the whole cluster on the loopback interface.
    Usage statistics are off: nothing is reported from a user's machine. Workers run at the niceness
    of the command, not Ray's default 15.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is first imported...
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray starts its workers at niceness 15 (to keep its control plane responsive on a busy node); here the
    # workers are the job, and on a shared machine niceness 15 starves them against every other process.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray: Any = require("ray", "ray", "predict --engine ray")
    require("ray.data", "ray", "predict --engine ray")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # ...and read here at start-up, in case ray was imported before
    _quiet_ray()
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        object_store_memory=_object_store_bytes(object_store_mb),
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        runtime_env={"env_vars": _worker_env()},
    )
    return ray


def _connect(opts: RayOptions) -> tuple[Any, bool]:
    """``(ray, connected_here)``: the session already open in this process, the cluster at
    ``opts.address``, or a new local one (:func:`start_local_cluster`)."""
    open_here = sys.modules.get("ray")
    if open_here is not None and open_here.is_initialized():
        return open_here, False
    try:
        if opts.address:
            ray: Any = require("ray", "ray", "predict --engine ray")
            require("ray.data", "ray", "predict --engine ray")
            _quiet_ray()
            ray.init(
                address=opts.address, logging_level=logging.WARNING, log_to_driver=False,
                runtime_env={"env_vars": _worker_env()},
            )  # fmt: skip
            return ray, True
        return start_local_cluster(object_store_mb=opts.object_store_mb), True
    except PromptclfError:
        raise
    except Exception as exc:
        where = f"the Ray cluster at {opts.address}" if opts.address else "a local Ray cluster"
        why = " ".join(str(exc).split())[:300]
        hint = ""
        if "auth" in why.lower():
            hint = "; the cluster uses token authentication: run with RAY_AUTH_MODE=token and its token (ray get-auth-token)"
        raise InputError(f"could not start or reach {where}: {why}{hint}") from exc


def _cause(exc: BaseException) -> str:
    """A Ray failure as one line: the user's own error where Ray wraps one."""
    inner = getattr(exc, "cause", None)
    if isinstance(inner, BaseException) and inner is not exc:
        return _cause(inner)
    text = " ".join(str(exc).split())
    return f"{text[:400]} ({type(exc).__name__})"


class _Progress:
    """Shards and rows done, rate and ETA on stderr: one line rewritten on a terminal, every 10 s otherwise."""

    def __init__(self, total_shards: int, skipped: int, total_rows: int | None, enabled: bool) -> None:
        self.total_shards, self.skipped, self.total_rows = total_shards, skipped, total_rows
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.rows = self.done = self.failed = 0

    def line(self) -> str:
        wall = time.perf_counter() - self.t0
        rate = self.rows / wall if wall > 0 else 0.0
        eta = ""
        if self.total_rows and rate > 0:
            eta = f", ETA {max(0.0, (self.total_rows - self.rows) / rate) / 60:.1f} min"
        rows = f"{self.rows:,}" + (f"/{self.total_rows:,}" if self.total_rows else "")
        failed = f", {self.failed} failed" if self.failed else ""
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        return (
            f"[predict ray] shards {self.done + self.skipped}/{self.total_shards}{skipped}{failed} | "
            f"rows {rows} | {rate:,.1f} rows/s{eta} | {wall:.0f}s"
        )

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < (1.0 if self.tty else 10.0):
            return
        self.last = now
        sys.stderr.write(("\r" + self.line() + "\033[K") if self.tty else self.line() + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self.show(force=True)
            if self.tty:
                sys.stderr.write("\n")


def _count_rows(shards: list[Shard]) -> int | None:
    """Rows to predict when every shard keeps its count in metadata (Parquet, Arrow); else None (no ETA)."""
    from ..data.tables import count_rows

    if not all(s.path.suffix.lower() in (".parquet", ".arrow") for s in shards):
        return None
    try:
        return sum(count_rows(s.path) for s in shards)
    except PromptclfError:
        return None  # a corrupt shard: reported when it is read


def predict_shards(
    student_dir: str | Path,
    source: str | Path,
    out_dir: str | Path,
    ray_opts: RayOptions | None = None,
    *,
    text_col: str | None = None,
    batch_size: int = 32,
    merge: bool = False,
    class_probs: bool = False,
    dtype: str = "float32",
    split: str | None = None,
    chunk_rows: int = 8192,
    progress: bool = True,
) -> ShardedRun:
    """Predict every row of every shard of ``source`` into ``out_dir`` (see the module docstring).

    Raises an InputError naming the failed shards once the others are written; the summary is
    written to ``out_dir`` either way.
    """
    opts = ray_opts or RayOptions()
    student = Path(student_dir)
    labels = predictor_labels(student)
    thresholds = predictor_thresholds(student)  # a multi-label student: sets decided from every label's probability
    check_dtype(student, dtype)
    text_col = text_col or default_text_col(student)
    out = Path(out_dir)
    shards = discover_shards(source, split)
    targets = plan_outputs(shards, out, source)
    out.mkdir(parents=True, exist_ok=True)
    if n := clean_temporaries(out):
        log.info("%s: removed %d temporary file(s) of an earlier run", out, n)
    fp = fingerprint(student, {"dtype": dtype, "merge": merge, "class_probs": class_probs, "text_col": text_col})
    results: dict[int, ShardResult] = {}
    todo: list[Shard] = []
    for s in shards:
        done, why = check_done(targets[s.index], s, fp)
        if done:
            results[s.index] = ShardResult(name=s.name, status="skipped")
        else:
            if why:
                log.warning("%s: predicting again: the output %s", s.name, why)
            todo.append(s)
    t0 = time.perf_counter()
    bar = _Progress(len(shards), len(shards) - len(todo), _count_rows(todo) if todo else 0, progress)
    stats = _Stats()
    if todo:
        ray, connected_here = _connect(opts)
        try:
            _run(
                ray, opts, student, todo, targets, labels, fp, results,
                dict(text_col=text_col, batch_size=batch_size, merge=merge, class_probs=class_probs,
                     dtype=dtype, chunk_rows=chunk_rows, thresholds=thresholds),
                bar, stats,
            )  # fmt: skip
        finally:
            if connected_here:
                ray.shutdown()
    wall = time.perf_counter() - t0
    first = stats.first_row_at - bar.t0 if stats.first_row_at else None
    run = ShardedRun(
        student=str(student), input=str(source), output=str(out), address=opts.address, workers=stats.workers,
        gpus_per_worker=stats.gpus, shards=[results[s.index] for s in shards], rows=bar.rows, wall_s=round(wall, 3),
        items_per_s=round(bar.rows / wall, 2) if bar.rows and wall else None,
        first_row_s=round(first, 3) if first is not None else None, worker_peak_rss_mb=stats.rss,
    )  # fmt: skip
    (out / SUMMARY_NAME).write_text(run.model_dump_json(indent=2))
    if run.failed:
        names = "; ".join(f"{s.name}: {(s.error or '').rstrip('.')}" for s in run.failed[:5])
        more = f" (and {len(run.failed) - 5} more, see {out / SUMMARY_NAME})" if len(run.failed) > 5 else ""
        ok = len(shards) - len(run.failed)
        raise InputError(
            f"{len(run.failed)} of {len(shards)} shards failed: {names}{more}. The other {ok} are in {out}; "
            "fix or remove the failed shards and rerun (finished shards are skipped)"
        )
    return run


@dataclass
class _Stats:
    """What the pipeline learns as it runs, for the summary."""

    workers: int = 0
    gpus: float = 0.0
    first_row_at: float | None = None
    rss: dict[str, int] = field(default_factory=dict)  # worker process id -> peak resident MB


def _run(
    ray: Any,
    opts: RayOptions,
    student: Path,
    todo: list[Shard],
    targets: dict[int, Path],
    labels: list[str],
    fp: str,
    results: dict[int, ShardResult],
    po: dict[str, Any],
    bar: _Progress,
    stats: _Stats,
) -> None:
    """Run the pipeline over ``todo``; fills ``results`` and ``stats``, counts rows on ``bar``."""
    import numpy as np
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    from .ray_worker import ShardPredictor, read_shards

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Small blocks: a shard is split over the workers (and its predictions come back) as it is read, not
    # handed whole to one worker; one block in flight per worker keeps the others from idling.
    ctx.target_max_block_size = min(ctx.target_max_block_size or BLOCK_BYTES, BLOCK_BYTES)
    res = ray.cluster_resources()
    gpus = 1.0 if res.get("GPU", 0) >= 1 else 0.0
    workers = opts.workers or max(1, int(res.get("GPU", 0) if gpus else res.get("CPU", 1)))
    threads = 0 if gpus else max(1, int(res.get("CPU", 1)) // workers)
    stats.workers, stats.gpus = workers, gpus
    log.info("%d shards to predict on %d worker(s)%s", len(todo), workers, " with one GPU each" if gpus else "")
    by_index = {s.index: s for s in todo}
    all_probs = po["class_probs"] or po["thresholds"] is not None  # what the workers send back
    write = ray.remote(num_cpus=0, max_retries=3)(write_shard)
    ds = ray.data.from_items([{"shard": s.index} for s in todo], override_num_blocks=len(todo))
    # Readers take no CPU slot (the workers hold every core) but are few: one reads far faster than a
    # worker predicts, and each is a Python process of its own.
    readers = max(1, min(len(todo), -(-workers // 4)))
    ds = ds.map_batches(
        read_shards, batch_size=1, batch_format="numpy", num_cpus=0, compute=TaskPoolStrategy(size=readers),
        fn_kwargs={"paths": {s.index: str(s.path) for s in todo}, "text_col": po["text_col"],
                   "chunk_rows": po["chunk_rows"]},
    )  # fmt: skip
    ds = ds.map_batches(
        ShardPredictor, batch_size=opts.batch_rows, batch_format="numpy",
        compute=ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1), num_cpus=1, num_gpus=gpus,
        fn_constructor_kwargs={"student_dir": str(student), "dtype": po["dtype"], "merge": po["merge"],
                               "batch_size": po["batch_size"], "class_probs": all_probs, "threads": threads},
    )  # fmt: skip
    tallies = {s.index: ShardTally(len(labels), all_probs) for s in todo}
    pending: dict[Any, int] = {}  # write task -> shard index
    rss = stats.rss

    def submit(i: int) -> None:
        t = tallies.pop(i)
        shard = by_index[i]
        stamp = ShardStamp(source=shard.name, source_bytes=shard.size, rows=t.total or 0, student=fp)
        a = t.arrays()
        ref = write.remote(
            shard.path, targets[i], stamp, labels, a["label"], a["prob"], a["probs"], po["chunk_rows"], a["score"],
            thresholds=po["thresholds"], prob_columns=po["class_probs"],
        )  # fmt: skip
        pending[ref] = i

    def collect(timeout: float) -> None:
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            i = pending.pop(ref)
            try:
                n = ray.get(ref)
                results[i] = ShardResult(name=by_index[i].name, status="done", rows=int(n))
                bar.done += 1
            except Exception as exc:
                results[i] = ShardResult(name=by_index[i].name, status="failed", error=_cause(exc))
                bar.failed += 1

    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            shard_ids, row_ids = batch["_shard"], batch["_row"]
            if stats.first_row_at is None:
                stats.first_row_at = time.perf_counter()
            for pid, mb in zip(batch["_pid"].tolist(), batch["_rss_mb"].tolist(), strict=True):
                rss[str(pid)] = max(rss.get(str(pid), 0), int(mb))
            touched = set()
            for i in np.unique(shard_ids).tolist():
                t = tallies.get(i)
                sel = shard_ids == i
                if t is None:
                    continue  # already written: a retried batch of a finished shard
                touched.add(i)
                real = sel & (row_ids >= 0)
                if real.any():
                    probs = None
                    if all_probs:
                        probs = np.stack([batch[f"_p{j}"][real] for j in range(len(labels))], axis=1)
                    score = batch["_score"][real] if "_score" in batch else None
                    bar.rows += t.add(row_ids[real], batch["_label"][real], batch["_prob"][real], probs, score)
                for k in np.flatnonzero(sel & (row_ids < 0)).tolist():
                    err = str(batch["_error"][k])
                    if err:
                        t.fail(err)
                    else:
                        t.finish(int(batch["_n"][k]))
            for i in touched:
                t = tallies[i]
                if t.error is not None:
                    results[i] = ShardResult(name=by_index[i].name, status="failed", error=t.error)
                    bar.failed += 1
                    tallies.pop(i)
                elif t.complete:
                    submit(i)
            collect(0)
            bar.show()
    except PromptclfError:
        raise
    except Exception as exc:
        raise PromptclfError(
            f"the Ray pipeline failed: {_cause(exc)}; finished shards are kept, rerun to predict the rest"
        ) from exc
    for i, t in tallies.items():  # the reader finished but rows never came back: never silently short
        got = f"{t.filled:,} of {t.total:,}" if t.total is not None else f"{t.filled:,}"
        results[i] = ShardResult(
            name=by_index[i].name, status="failed", error=f"only {got} rows came back from the workers; rerun"
        )
        bar.failed += 1
    while pending:
        collect(1.0)
        bar.show()
    bar.close()
