"""What each run costs in the report, on which basis, and what is missing where a cost is unknown.

Every cost the report shows carries its basis: a provider's list price, a local model with no
list price, or machine time at a dollars-per-hour price (a student, a local model, or a model on
a ``--base-url`` server priced with ``--hourly-price``). A cost that cannot be known is ``None``
with a sentence saying which figure is missing and how to supply it; nothing downstream
concludes from it.
"""

from __future__ import annotations

from typing import Any

from ..pricing.costs import break_even_items, compute_cost_per_1k, round_volume
from ..pricing.prices import load_prices, price_for
from ..providers.base import Usage
from .load import Run, _num


def machine_hourly_price(runs: list[Run], explicit: float | None) -> float | None:
    """The report's machine-hour price: ``explicit`` (``--hourly-price``), else the highest a student recorded."""
    if explicit is not None:
        return explicit
    found = [_num(r.student.train.hourly_price_usd) for r in runs if r.student is not None]
    prices = [p for p in found if p is not None and p > 0]
    return max(prices) if prices else None


def _machine(h: float) -> str:
    return f"machine time at ${h:g}/h"


def _reprice(run: Run, prices: str | None) -> float | None:
    """A label run's list cost per 1k items from its recorded token usage and the table in ``prices``."""
    if not prices or not run.rec.n_items:
        return None
    price = price_for(run.rec.provider, run.rec.model, load_prices(prices))
    if not price.known:
        return None
    u = run.rec.usage
    usage = Usage(u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens)
    return 1000 * price.cost(usage, batch=bool(run.options.get("batch_api"))) / run.rec.n_items


def label_cost(run: Run, explicit: float | None, prices: str | None) -> dict[str, Any]:
    """``cost_per_1k``, ``cost_basis``, ``cost_missing`` (why it is unknown) and ``cost_is_local`` of a label run.

    A ``--base-url`` server with no list price is priced by machine time only at the hourly
    price its run recorded or ``explicit`` (the report's ``--hourly-price``), never at a price a
    student recorded for its own machine.
    """
    provider, model = run.rec.provider, run.rec.model
    base_url = run.options.get("base_url")
    cost = run.cost_per_1k
    known = run.price_known
    out: dict[str, Any] = {"cost_per_1k": cost, "cost_basis": "list price", "cost_missing": None}
    out["cost_is_local"] = known and cost == 0 and provider == "local"
    if out["cost_is_local"]:
        out["cost_basis"] = "local model, no list price"
    if known:
        return out
    if (repriced := _reprice(run, prices)) is not None:
        return {**out, "cost_per_1k": repriced, "cost_basis": "list price from --prices"}
    h = _num(run.options.get("hourly_price")) if base_url else None
    h = h if h is not None else (explicit if base_url else None)
    if h is not None and run.items_per_s:
        return {**out, "cost_per_1k": compute_cost_per_1k(run.items_per_s, h), "cost_basis": _machine(h)}
    if h is not None:
        missing = (
            f"{run.name}'s speed, needed to price it at ${h:g}/h: its answers came from the cache; "
            "rerun it with --no-cache to measure it"
        )
    elif base_url:
        missing = (
            f"a price for {run.name} ({model} on the self-hosted server {base_url}): pass --hourly-price with "
            "the serving machine's dollars per hour, or --prices with a table listing "
            f"{provider}/{model}"
        )
    else:
        missing = (
            f"a price for {run.name} ({provider}/{model} is not in the price table): pass --prices FILE listing it"
        )
    return {**out, "cost_per_1k": None, "cost_basis": "unknown", "cost_missing": missing}


def student_cost(run: Run, hourly: float | None) -> dict[str, Any]:
    """A student's inference cost per 1k items (machine time) and its training cost, each with what is missing."""
    h = (_num(run.student.train.hourly_price_usd) if run.student is not None else None) or hourly
    cost = run.cost_per_1k
    if cost is None and hourly:
        cost = compute_cost_per_1k(run.items_per_s, hourly)
    out: dict[str, Any] = {
        "cost_per_1k": cost,
        "cost_basis": _machine(h) if h else "as recorded",
        "cost_missing": None,
        "cost_is_local": False,
    }
    if cost is None:
        out["cost_basis"] = "unknown"
        out["cost_missing"] = (
            f"{run.name}'s inference cost: its run recorded no hourly price or speed; pass --hourly-price"
        )
    return out


def break_even(student: dict[str, Any], teacher: dict[str, Any], hourly: float | None) -> dict[str, Any]:
    """When the student's training plus inference gets cheaper than the LLM, or why that cannot be decided.

    ``status`` is ``pays off`` (``items`` set), ``never`` (both per-item costs known and the
    student is not cheaper) or ``unknown`` (``missing`` names the figure); ``when`` says it in words.
    """
    out: dict[str, Any] = {
        "student": student["name"],
        "llm": teacher["name"],
        "llm_cost_per_1k": teacher["cost_per_1k"],
        "student_cost_per_1k": student["cost_per_1k"],
        "student_fixed_cost": student["train_cost_usd"],
        "basis": f"LLM: {teacher['cost_basis']}; student: {student['cost_basis']}",
        "items": None,
        "missing": None,
    }
    if out["llm_cost_per_1k"] is None:
        out["missing"] = teacher.get("cost_missing") or f"a price for {teacher['name']}"
    elif out["student_cost_per_1k"] is None:
        out["missing"] = student.get("cost_missing") or f"{student['name']}'s inference cost"
    elif out["student_fixed_cost"] is None:
        out["missing"] = f"{student['name']}'s training cost: distill it with --hourly-price to record one"
    else:
        out["items"] = break_even_items(out["llm_cost_per_1k"], out["student_cost_per_1k"], out["student_fixed_cost"])
    if out["items"] is None and teacher.get("cost_is_local") and teacher.get("compute_cost_per_1k") is not None:
        # A free local LLM never loses on list price; priced by machine time, both at the same $/h.
        s_cost = (
            student["compute_cost_per_1k"] if student["compute_cost_per_1k"] is not None else student["cost_per_1k"]
        )
        items = break_even_items(teacher["compute_cost_per_1k"], s_cost, student["train_cost_usd"])
        out.update(
            llm_cost_per_1k=teacher["compute_cost_per_1k"],
            student_cost_per_1k=s_cost,
            items=items,
            basis=f"compute time at ${hourly:g}/h",
            missing=None if s_cost is not None and student["train_cost_usd"] is not None else out["missing"],
        )
    if out["missing"]:
        out["status"], out["when"] = "unknown", f"unknown: needs {out['missing']}"
    elif out["items"] is None:
        out["status"], out["when"] = "never", "never"
    else:
        out["status"], out["when"] = "pays off", f"{round_volume(out['items'])} items"
    return out


def teacher_label_cost(run: Run, teacher: dict[str, Any] | None) -> dict[str, Any]:
    """What the teacher's labels for a student's training set (train + validation rows) cost, and on which basis.

    Priced at the teacher's row in the report when it is there (its basis, hourly or ``--prices``
    included), else at the list price the student recorded with its teacher; ``None`` with the
    missing figure otherwise.
    """
    st = run.student
    out: dict[str, Any] = {"teacher_label_cost_usd": None, "teacher_label_cost_basis": None}
    if st is None or st.teacher is None:
        return out
    rows = (st.data.train_rows or 0) + (st.data.val_rows or 0)
    per_1k, basis, missing = st.teacher.cost_per_1k, "list price", None
    if teacher is not None:
        per_1k, basis, missing = teacher["cost_per_1k"], teacher["cost_basis"], teacher.get("cost_missing")
    elif per_1k is None:
        missing = f"a price for {st.teacher.name} ({st.teacher.provider}/{st.teacher.model}): add its run folder to the report"
    if not rows:
        missing = f"{run.name}'s training row count (not recorded)"
    if missing or per_1k is None:
        return {**out, "teacher_label_rows": rows, "teacher_label_cost_missing": missing or "a price for the teacher"}
    return {
        "teacher_label_cost_usd": per_1k * rows / 1000.0,
        "teacher_label_cost_basis": basis,
        "teacher_label_rows": rows,
        "teacher_label_cost_missing": None,
    }
