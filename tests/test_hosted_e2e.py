"""``promptclf label`` end to end through the hosted providers, against a real OpenAI-compatible server.

The CLI runs as a subprocess, exactly as a user runs it: ``--provider openai --base-url``
(LangChain ChatOpenAI) and ``--provider together`` with ``TOGETHER_API_BASE`` (ChatTogether),
both talking to llama.cpp serving SmolLM2 through a pass-through :class:`FakeServer` that
shows what went over the wire. The API key must reach the server and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from promptclf.data.tables import BBC_TOPICS
from promptclf.testing.fake_server import FakeServer, Upstream

pytestmark = pytest.mark.server

TOPICS = ",".join(BBC_TOPICS)


@pytest.fixture(scope="module")
def news_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five short BBC News rows with gold labels, one of them with an empty text."""
    from promptclf.data.tables import bbc_sample

    df = bbc_sample(4, seed=7)[["id", "text", "label"]]
    df["text"] = df["text"].str.slice(0, 140)
    df = pd.concat([df, pd.DataFrame([{"id": "blank", "text": "", "label": "tech"}])], ignore_index=True)
    path = tmp_path_factory.mktemp("e2e") / "news.csv"
    df.to_csv(path, index=False)
    return path


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptclf", "label", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _files_under(*paths: Path) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(f for f in p.rglob("*") if f.is_file())
        elif p.exists():
            out.append(p)
    return out


def _assert_complete(out_file: Path, news_csv: Path) -> pd.DataFrame:
    src = pd.read_csv(news_csv, dtype=str, keep_default_na=False)
    out = pd.read_csv(out_file, dtype=str, keep_default_na=False)
    assert list(out["id"]) == list(src["id"])  # every row, in input order
    assert {"pred_label", "pred_prob", "pred_status", "pred_reason", "pred_request"} <= set(out.columns)
    assert set(out["pred_status"]) <= {"ok", "empty", "invalid", "error"} and all(out["pred_status"] != "")
    blank = out[out["id"] == "blank"].iloc[0]
    assert blank["pred_status"] == "error" and "empty" in blank["pred_reason"]
    scored = out[out["id"] != "blank"]
    assert (scored["pred_status"] != "error").all(), scored[["pred_status", "pred_reason"]]
    assert set(scored.loc[scored["pred_status"] == "ok", "pred_label"]) <= set(TOPICS.split(","))
    return out


@pytest.mark.parametrize("provider", ["openai", "together"])
def test_label_cli_through_hosted_provider(provider: str, llama_server, news_csv: Path, tmp_path: Path):
    key = f"sk-e2e-{uuid.uuid4().hex}"
    store = tmp_path / "store.sqlite"
    out_file = tmp_path / "labeled.csv"
    # require_key: the proxy answers 401 unless the key arrives as the bearer token, so every 200
    # below proves the key was sent, and its absence from the files below means something.
    with FakeServer(Upstream(llama_server.root), require_key=key) as proxy:
        env = {
            k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TOGETHER_API_KEY", "OPENAI_BASE_URL")
        }
        env.update(HF_HUB_OFFLINE="1", PROMPTCLF_STORE=str(store))
        args = [str(news_csv), "-o", str(out_file), "--model", "smollm2", "--labels", TOPICS]
        args += [
            "--batch-size",
            "2",
            "--concurrency",
            "2",
            "--max-chars",
            "140",
            "--max-tokens",
            "48",
            "--timeout",
            "120",
        ]
        if provider == "openai":
            env["OPENAI_API_KEY"] = key
            args += ["--provider", "openai", "--base-url", proxy.base_url]
        else:
            env["TOGETHER_API_KEY"] = key
            env["TOGETHER_API_BASE"] = proxy.base_url
            args += ["--provider", "together"]
        res = _run_cli(args, env, tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        chats = proxy.chat_records()

    out = _assert_complete(out_file, news_csv)
    # The requests really went to the server, with the key, as OpenAI chat completions.
    assert chats and all(r.status == 200 for r in chats)
    assert all(r.body and r.body["model"] == "smollm2" and r.body.get("max_tokens") == 48 for r in chats)
    requested = {r.body_hash for r in chats}
    assert len(requested) == len(chats), "a request was sent twice"
    assert set(out.loc[out["pred_status"] == "ok", "pred_request"]) - {""}  # ok rows name their request

    run_dir = tmp_path / "labeled.run"
    assert (run_dir / "run.json").is_file()
    for f in _files_under(out_file, run_dir, *tmp_path.glob("store.sqlite*")):
        assert key.encode() not in f.read_bytes(), f"the API key leaked into {f}"
    assert key not in res.stdout and key not in res.stderr
    assert str(out_file) in res.stdout  # results to stdout, progress to stderr
