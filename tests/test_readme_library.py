"""The README's library example runs as written: with a fake scoring provider here, with the
embedded local model in the slow tier."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from promptclf.data.tables import bbc_sample
from promptclf.providers.base import ScoreRequest, ScoreResult, Usage
from promptclf.providers.spec import ProviderSpec

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    """The README's python block that labels a frame."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if "Labeler(LabelOptions(shots=10)).label(df)" in b]
    assert len(found) == 1, "the README's library section lost its example"
    return found[0]


def _news(folder: Path, n: int) -> None:
    """``news.csv`` as README command 1 writes it (here smaller, items cut short)."""
    df = bbc_sample(n, seed=0)[["text", "label"]]
    df["text"] = df["text"].str.slice(0, 300)
    df.to_csv(folder / "news.csv", index=False)


class Keywords:
    """A scoring provider that prefers the label whose name the item mentions."""

    name, model, kind, base_url = "local", "keywords", "scoring", None
    shot_attention, max_item_tokens = "full", None

    def load(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def layout_tokens(self, system: str, prefix: str, suffix: str) -> tuple[int, int]:
        return self.count_tokens(system + prefix), self.count_tokens(suffix)

    def score(self, request: ScoreRequest) -> ScoreResult:
        rows = []
        for item in request.items:
            hits = [1.0 + item.lower().count(lab) for lab in request.labels]
            rows.append([h / sum(hits) for h in hits])
        return ScoreResult(rows, Usage(sum(map(self.count_tokens, request.items)), 0), 0.0)


def _run(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    monkeypatch.chdir(folder)
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    scope: dict[str, object] = {}
    exec(compile(library_example(), "README.md", "exec"), scope)
    assert re.fullmatch(r"\d+% labeled, accuracy \d+\.\d%\n", capsys.readouterr().out)
    return scope


def test_readme_example_with_a_fake_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _news(tmp_path, 60)
    built: list[ProviderSpec] = []

    def build(spec: ProviderSpec) -> Keywords:
        built.append(spec)
        return Keywords()

    monkeypatch.setattr(ProviderSpec, "build", build)
    scope = _run(tmp_path, monkeypatch, capsys)
    assert [s.name for s in built] == ["local"]  # --provider auto, no key: the embedded model
    result, df = scope["result"], scope["df"]
    frame = result.frame  # type: ignore[attr-defined]
    assert isinstance(frame, pd.DataFrame) and list(frame["text"]) == list(df["text"])  # type: ignore[index]
    assert (frame["pred_status"] == "shot").sum() == 50 and (frame["pred_status"] == "ok").sum() == 10
    summary = result.summary  # type: ignore[attr-defined]
    assert summary.n_items == 10 and summary.coverage == 1.0 and summary.provider == "local"
    assert summary.metrics["n_scored"] == 10


@pytest.mark.slow
def test_readme_example_with_the_embedded_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    _news(tmp_path, 60)  # 50 shot rows (10 per class) and 10 to label: minutes on a busy 2-core CPU
    scope = _run(tmp_path, monkeypatch, capsys)
    summary = scope["result"].summary  # type: ignore[attr-defined]
    assert summary.model == "smollm2" and summary.n_shots == 50 and summary.n_items == 10
    assert summary.coverage == 1.0
    assert summary.usage.requests >= 1 and summary.wall_s > 0
