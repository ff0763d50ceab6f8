"""``promptclf serve``, slow tier: the real command on 127.0.0.1 with a real MiniLM LoRA student.

* 32 clients at once, 128 requests: every one answered 200 with the label and probabilities the
  student gives in process; the server batched them (fewer model passes than requests).
* SIGTERM with a request in flight: that request is answered in full, then the process exits 0 with
  its closing line; SIGINT likewise. A taken port is one error line, exit 2.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serve_student(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's shared student where the suite has one, else a MiniLM LoRA trained briefly here."""
    try:
        return Path(request.getfixturevalue("student"))
    except pytest.FixtureLookupError:
        pass
    pytest.importorskip("peft")
    from promptclf.data.tables import bbc_sample, write_table
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    work = tmp_path_factory.mktemp("serve_student")
    df = bbc_sample(40, seed=2)[["text", "label"]]
    df["text"] = df["text"].str.slice(0, 200)
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    data = write_table(df, work / "teacher.csv")
    opts = DistillOptions.build(recipe="minilm-lora", max_steps=2, max_length=32, test_fraction=0.2, patience=0)
    distill(data, work / "student", opts)
    return work / "student"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A ``promptclf serve`` process; ``stderr`` collects its lines (read by a thread so the pipe never fills)."""

    def __init__(self, folder: Path, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "promptclf", "serve", str(folder), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.stderr}"
            try:
                r = httpx.get(self.url + "/health", timeout=2)
                if r.status_code == 200:
                    return dict(r.json())
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"serve never answered /health: {self.stderr}")

    def stop(self, sig: int, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture()
def served(serve_student: Path) -> Iterator[Served]:
    s = Served(serve_student, "--max-wait-ms", "5")
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)


def _texts(n: int) -> list[str]:
    from promptclf.data.tables import bbc_sample

    base = bbc_sample(None, seed=5)["text"].str.slice(0, 120).tolist()
    return [base[i % len(base)] for i in range(n)]


def _busy(health: dict[str, Any]) -> bool:
    return bool(health["waiting"] or health["in_model"])


def test_concurrent_clients_all_answered_as_the_student_predicts_then_sigterm(
    served: Served, serve_student: Path
) -> None:
    from promptclf.predict.student import Student

    health = served.wait_ready()
    assert health["model_loaded"] and health["status"] == "ok"
    with httpx.Client(base_url=served.url, timeout=10) as one:  # one kept-alive connection, no model involved
        times = []
        for _ in range(21):
            t0 = time.perf_counter()
            assert one.get("/health").status_code == 200
            times.append(time.perf_counter() - t0)
    assert sorted(times)[10] < 0.025, sorted(times)  # ~40 ms each would be Nagle + delayed ACK (no TCP_NODELAY)
    texts = _texts(128)
    with httpx.Client(base_url=served.url, timeout=60) as client:

        def ask(text: str) -> Any:
            return client.post("/predict", json={"text": text})

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, texts))
        many = client.post("/predict", json={"texts": texts[:40]})
        after = client.get("/health").json()
    assert [a.status_code for a in answers] == [200] * len(texts), {a.status_code for a in answers}
    student = Student.load(serve_student)
    assert after["labels"] == student.labels
    expected = student.predict_proba(texts)
    got = np.array([[a.json()["predictions"][0]["probs"][lab] for lab in student.labels] for a in answers])
    assert np.abs(got - expected).max() < 1e-4  # each client got its own text's answer
    assert [p["label"] for p in many.json()["predictions"]] == [student.labels[j] for j in expected[:40].argmax(-1)]
    assert after["requests"] == len(texts) + 1 and after["texts"] == len(texts) + 40
    assert after["largest_batch"] > 1 and after["batches"] < len(texts) + 1  # concurrent requests were batched

    # A request still running when SIGTERM arrives is answered in full before the process exits.
    result: dict[str, Any] = {}

    def long_request() -> None:
        result["r"] = httpx.post(served.url + "/predict", json={"texts": _texts(200)}, timeout=120)

    worker = threading.Thread(target=long_request)
    worker.start()
    deadline = time.monotonic() + 30
    while "r" not in result and not _busy(httpx.get(served.url + "/health", timeout=5).json()):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # until the server holds the long request
    code = served.stop(signal.SIGTERM)
    worker.join(60)
    assert result["r"].status_code == 200 and len(result["r"].json()["predictions"]) == 200
    assert code == 0, served.stderr
    assert "stopped: 130 requests" in served.stderr and "Traceback" not in served.stderr, served.stderr


def test_sigint_stops_cleanly_and_a_taken_port_is_one_line(served: Served, serve_student: Path) -> None:
    served.wait_ready()
    assert httpx.post(served.url + "/predict", json={"text": "Rates rise again."}, timeout=30).status_code == 200
    second = Served(serve_student, port=served.port)  # the same port, taken by the first
    code2 = second.proc.wait(180)
    second._reader.join(5)
    assert code2 == 2 and f"cannot listen on 127.0.0.1:{served.port}" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert served.stop(signal.SIGINT) == 0, served.stderr
    assert "stopped: 1 requests" in served.stderr and "Traceback" not in served.stderr, served.stderr
