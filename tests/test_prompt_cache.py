"""Prompt caching in the cost: a byte-identical static prefix, cached tokens read and priced,
the dry run's estimate of the saving, and old stores opening with the new column."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.data.tables import BBC_TOPICS, bbc_sample
from promptclf.label.chat_runner import ChatRunner
from promptclf.label.jobs import Task
from promptclf.label.labeler import Labeler
from promptclf.label.options import LabelOptions
from promptclf.label.prompt_cache import static_prefix
from promptclf.pricing.prices import load_prices, price_for
from promptclf.providers.base import Usage
from promptclf.providers.hosted import cached_tokens
from promptclf.store import Store


def _news(n: int = 40) -> pd.DataFrame:
    df = bbc_sample(n, seed=3)[["text", "label"]]
    df["text"] = df["text"].str.slice(0, 300)
    return df


@pytest.mark.parametrize("base_url", [None, "http://127.0.0.1:9/v1"])  # json_schema (strict) and json_object
def test_every_request_of_a_job_opens_with_the_same_bytes(monkeypatch, base_url):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-sent")
    opts = LabelOptions(provider="openai", base_url=base_url, shots=1, batch_size=4, labels=None)
    lab = Labeler(opts, progress=False)
    job = lab.prepare(_news())
    assert lab.prompts is not None
    runner = ChatRunner(lab.context(), job, lab.prompts)  # type: ignore[arg-type]
    tasks = runner.first_tasks()
    rows = tasks[0].rows
    # Re-ask batches as the runner makes them: smaller, later rounds, with off-list answers quoted.
    tasks += [Task(rows[:2], 1, {rows[0]: "weather"}), Task(rows[3:4], 2), Task(tasks[-1].rows[-1:], 1)]
    reqs = [runner.build_request(t) for t in tasks]
    assert len({r.key for r in reqs}) == len(reqs)
    systems = {r.messages[0]["content"] for r in reqs}
    assert len(systems) == 1
    users = [r.messages[1]["content"] for r in reqs]
    head = users[0][: users[0].index("[1] ")]
    assert len(head) > 500  # label list, instructions and one example per class
    for u in users:
        assert u.index("[1] ") == len(head) and u.encode()[: len(head.encode())] == head.encode()
    assert "Note: attempt 2" in users[len(runner.first_tasks())]  # the re-ask's note comes after the items
    found = static_prefix([r.messages for r in reqs])  # what --dry-run counts as the cacheable prefix
    assert found.startswith(reqs[0].messages[0]["content"] + head + "[1] ")
    assert len(found) - len(reqs[0].messages[0]["content"] + head) < 12  # at most a chance common start of items
    if base_url is None:  # strict json_schema: the schema (part of the cached prefix at OpenAI) never varies
        assert len({json.dumps(r.schema, sort_keys=True) for r in reqs}) == 1


def test_cached_tokens_are_read_from_every_usage_shape_and_priced():
    assert cached_tokens({"input_tokens": 2000, "input_token_details": {"cache_read": 1536}}) == 1536  # LangChain
    assert cached_tokens({"prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1024}}) == 1024  # OpenAI
    assert cached_tokens({"prompt_tokens": 10, "cached_tokens": 7}) == 7
    assert cached_tokens({"prompt_tokens": 10}) == 0
    assert (Usage(10, 2, 4) + Usage(5, 1, 3)) == Usage(15, 3, 7)
    price = price_for("openai", "gpt-4o-mini", load_prices())
    u = Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_prompt_tokens=600_000)
    assert price.cost(u) == pytest.approx(0.4 * 0.15 + 0.6 * 0.075)
    assert price.cost(u, batch=True) == pytest.approx(0.075)  # no batch cached rate in the table: batch input
    unknown = price_for("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", load_prices())
    assert unknown.cost(u) == pytest.approx(0.88)  # no cached-input price: no discount
    assert price.cacheable_tokens(1023) == 0 and price.cacheable_tokens(1300) == 1280


def _dry(tmp_path, monkeypatch, *extra: str) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-sent")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: a request would fail
    p = tmp_path / "news.csv"
    _news(60).to_csv(p, index=False)
    args = ["label", str(p), "--provider", "openai", "--labels", ",".join(BBC_TOPICS), "--dry-run", *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


def test_dry_run_estimates_the_cache_saving_and_the_batch_price(tmp_path, monkeypatch):
    out = _dry(tmp_path, monkeypatch, "--shots", "5", "--examples", str(_examples(tmp_path)))
    line = next(x for x in out.splitlines() if x.startswith("# prompt cache:"))
    assert "cacheable" in line and "save $" in line
    saving = float(line.split("save $")[1].split()[0])
    assert saving > 0
    cost = float(out.split("# estimated cost: $")[1].split()[0])
    batch = _dry(tmp_path, monkeypatch, "--shots", "5", "--examples", str(_examples(tmp_path)), "--batch-api")
    bline = next(x for x in batch.splitlines() if x.startswith("# batch API:"))
    batch_cost = float(batch.split("# estimated cost: $")[1].split()[0])
    assert batch_cost == pytest.approx(cost / 2, rel=1e-6)  # gpt-4o-mini's batch price: half of both rates
    assert f"${batch_cost:.4f} at batch prices (${cost:.4f}" in bline
    # Zero-shot the prefix is under OpenAI's 1,024-token minimum: no saving claimed.
    zero = _dry(tmp_path, monkeypatch)
    assert "no saving (under the 1,024-token minimum)" in zero


def _examples(tmp_path):
    p = tmp_path / "examples.csv"
    bbc_sample(50, seed=9)[["text", "label"]].to_csv(p, index=False)
    return p


def test_an_old_store_opens_and_gains_the_cached_column(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema as the first release wrote it
        db.executescript(
            """CREATE TABLE responses (key TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL,
            request TEXT NOT NULL, response TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL, cost_usd REAL NOT NULL, created REAL NOT NULL);
            CREATE TABLE attempts (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, run_id TEXT,
            provider TEXT NOT NULL, model TEXT NOT NULL, outcome TEXT NOT NULL, error TEXT, prompt_tokens INTEGER,
            completion_tokens INTEGER, latency_s REAL, cost_usd REAL, created REAL NOT NULL);"""
        )
        db.execute("INSERT INTO responses VALUES ('k1','openai','m','{}','{\"items\": []}',10,2,0.5,0.001,0)")
    store = Store(path)
    old = store.get("k1")
    assert old is not None and old.prompt_tokens == 10 and old.cached_prompt_tokens == 0
    store.put("k2", "openai", "m", {}, "{}", 2000, 5, 0.1, 0.0, 1536)
    store.log("k2", "run", "openai", "m", "ok", None, 2000, 5, 0.1, 0.0, 1536)
    new = store.get("k2")
    assert new is not None and new.cached_prompt_tokens == 1536
    assert store.attempts("run")[0]["cached_prompt_tokens"] == 1536
    store.close()
