"""--dry-run renders the first prompt and estimates the job; nothing is sent."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner

from promptclf.cli import main


def _news(tmp_path):
    rows = [(f"{topic} story number {i}", topic) for i in range(6) for topic in ("business", "sport", "tech")]
    p = tmp_path / "news.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(p, index=False)
    return p


def test_dry_run_prices_a_together_job_without_sending(tmp_path, monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "tk-secret-never-printed")
    # An address where nothing listens: a request would fail loudly.
    monkeypatch.setenv("TOGETHER_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("PROMPTCLF_STORE", str(tmp_path / "store.sqlite"))
    res = CliRunner().invoke(main, ["label", str(_news(tmp_path)), "--shots", "2", "--batch-size", "4", "--dry-run"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "[system]" in out and "[user]" in out
    assert "[1] " in out and "[4] " in out and "[5] " not in out  # first batch of 4 numbered items
    assert out.count("Label: ") == 6  # 2 shots x 3 classes
    assert "# provider together:meta-llama/Llama-3.3-70B-Instruct-Turbo" in out
    assert "# rows 18: 12 to label, 6 shots" in out
    assert "3 requests" in out
    cost = float(out.split("# estimated cost: $")[1].split()[0])
    assert cost > 0
    assert "tk-secret-never-printed" not in out
    assert not (tmp_path / "news.labeled.csv").exists()


def test_bigger_batches_cost_less_per_item(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("PROMPTCLF_STORE", str(tmp_path / "store.sqlite"))

    def tokens(batch: int) -> int:
        res = CliRunner().invoke(
            main,
            [
                "label",
                str(_news(tmp_path)),
                "--provider",
                "openai",
                "--shots",
                "2",
                "--batch-size",
                str(batch),
                "--dry-run",
            ],
        )
        assert res.exit_code == 0, res.output
        return int(res.output.split("# estimated tokens: ≈")[1].split()[0].replace(",", ""))

    assert tokens(12) < 0.5 * tokens(1)
