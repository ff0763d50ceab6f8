"""What ``promptclf review`` reads and how it ranks: its options, declared once."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..options import build_options


class ReviewOptions(BaseModel):
    """What ``promptclf review`` reads and how it ranks; saved beside the queue as ``REVIEW.json``."""

    model_config = ConfigDict(extra="forbid")

    text_col: str = Field("text", description="Text column.")
    label_col: str = Field("pred_label", description="LLM label column.")
    status_col: str = Field(
        "pred_status", description="Rank only rows whose status is 'ok' (if the column is present)."
    )
    prob_col: str = Field("pred_prob", description="The LLM's confidence in its label (if present).")
    probs_col: str = Field(
        "pred_probs", description="The LLM's distribution over labels, JSON {label: prob} (if present)."
    )
    gold_col: str | None = Field(None, description="Gold labels, if any: prints the precision at k of the ranking.")
    top: str = Field("10%", description="Rows in the queue: a count (200), a fraction (0.1) or a percentage (10%).")
    folds: int = Field(5, ge=2, le=50, description="Cross-validation folds of the student.")
    neighbours: int = Field(10, ge=1, le=200, description="Nearest rows whose LLM labels vote.")
    c: float = Field(
        1.0,
        gt=0,
        description="Inverse L2 strength of the logistic-regression student.",
        json_schema_extra={"flag": "--student-c"},
    )
    weights: Literal["fitted", "equal"] = Field(
        "fitted",
        description="How the signals combine: 'fitted' weighs each by its reliability on this file, estimated "
        "without gold and anchored on the LLM's confidence; 'equal' takes their plain mean.",
    )
    seed: int = Field(0, description="Fold assignment seed.")
    store: str | None = Field(
        None, description="SQLite store caching embeddings (default $PROMPTCLF_STORE or ~/.cache/promptclf)."
    )
    no_cache: bool = Field(False, description="Do not read or write cached embeddings.")
    multi_label: bool = Field(
        False,
        description="Each row has a set of labels (pred_labels): rank every (row, label) decision. Automatic "
        "when the run's labels.json says multi-label.",
    )

    @classmethod
    def build(cls, **kwargs: Any) -> ReviewOptions:
        """Options from the CLI (None = default); pydantic errors become a ConfigError."""
        opts = build_options(cls, kwargs)
        top_count(opts.top, 100)  # fail at the edge, not after embedding
        return opts


def top_count(top: str, n: int) -> int:
    """Rows in the queue out of ``n`` ranked: ``"200"`` → 200, ``"0.1"`` or ``"10%"`` → 10% (at least 1)."""
    s = str(top).strip()
    try:
        if s.endswith("%"):
            frac = float(s[:-1]) / 100.0
        elif "." in s or "e" in s.lower():
            frac = float(s)
        else:
            k = int(s)
            if k < 1:
                raise ValueError
            return min(k, n)
    except ValueError:
        raise ConfigError(f"--top {top!r}: give a count (200), a fraction (0.1) or a percentage (10%)") from None
    if not 0 < frac <= 1:
        raise ConfigError(f"--top {top!r}: a fraction must be in (0, 1], a percentage in (0%, 100%]")
    return min(n, max(1, math.ceil(frac * n))) if n else 0
