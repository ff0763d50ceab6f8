"""Spend is shown only where a price is known: none for the free local model, "cost unknown" for a
model missing from the price table, dollars otherwise (progress bar and the label summary)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from promptclf.cli.label import _fmt_summary
from promptclf.label.labeler import Labeler
from promptclf.label.options import LabelOptions
from promptclf.pricing.prices import Price
from promptclf.runs import LabelRun
from promptclf.testing.fake_provider import FakeChatProvider


def test_spend_text_by_price() -> None:
    assert Price(0.0, 0.0).spend_text(0.0) == ""
    assert Price(0.0, 0.0, known=False).spend_text(0.0) == "cost unknown: add --prices"
    assert Price(1.0, 2.0).spend_text(0.01234) == "spent $0.0123"


@pytest.mark.parametrize(
    ("provider", "price_known", "cost", "want"),
    [
        ("local", True, 0.0, "cost: none (the local model"),
        ("openai", False, 0.0, "cost: unknown: the model is not in the price table"),
        ("together", True, 0.5, "cost: $0.5000 spent now"),
    ],
)
def test_summary_line(provider: str, price_known: bool, cost: float, want: str) -> None:
    rec = LabelRun(provider=provider, model="m", price_known=price_known, cost_usd=cost, cost_per_1k=cost)
    text = _fmt_summary(rec)
    assert want in text and ("$0.0000" not in text or price_known and provider != "local")


def test_progress_bar_of_an_unpriced_model_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    opts = LabelOptions(labels=[{"name": "a"}, {"name": "b"}], label_col=None, store=str(tmp_path / "s.sqlite"))
    Labeler(opts, provider=FakeChatProvider(), progress=True).label(pd.DataFrame({"text": ["x", "y", "z"]}))
    shown = err.getvalue()
    assert "cost unknown: add --prices" in shown and "spent $" not in shown
