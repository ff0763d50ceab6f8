"""Cost arithmetic for comparing a prompted LLM with a distilled student.

Costs are dollars; "per 1k" means per 1,000 items classified.
"""

from __future__ import annotations

import math


def break_even_items(
    llm_cost_per_1k: float | None, student_cost_per_1k: float | None, student_fixed_cost: float | None
) -> float | None:
    """Items after which ``fixed + n * student`` is cheaper than ``n * llm``; None when it never is.

    The student never pays off when it is not cheaper per item than the LLM (for example a
    local LLM that costs $0). With no fixed cost and a cheaper student it pays off at once (0).
    """
    if llm_cost_per_1k is None or student_cost_per_1k is None:
        return None
    fixed = max(0.0, student_fixed_cost or 0.0)
    saving_per_item = (llm_cost_per_1k - student_cost_per_1k) / 1000.0
    if saving_per_item <= 0:
        return None
    return fixed / saving_per_item


def compute_cost_per_1k(items_per_s: float | None, hourly_price_usd: float | None) -> float | None:
    """Dollars per 1,000 items for a machine rented at ``hourly_price_usd`` that does ``items_per_s``."""
    if not items_per_s or items_per_s <= 0 or hourly_price_usd is None:
        return None
    return 1000.0 / items_per_s / 3600.0 * hourly_price_usd


def total_cost(n_items: float, cost_per_1k: float, fixed: float = 0.0) -> float:
    """``fixed + n_items`` at ``cost_per_1k``."""
    return fixed + n_items * cost_per_1k / 1000.0


def round_volume(n: float) -> str:
    """A break-even volume for prose: ``~12,000``, ``~1.2 million``; two significant figures."""
    if n <= 0:
        return "0"
    if n < 100:
        return f"~{math.ceil(n):,}"
    digits = int(math.floor(math.log10(n))) - 1
    r = round(n, -digits)
    if r >= 1e9:
        return f"~{r / 1e9:.2g} billion"
    if r >= 1e6:
        return f"~{r / 1e6:.2g} million"
    return f"~{int(r):,}"
