"""Benchmark ``promptclf serve``: a bounded load test on 127.0.0.1 at 1, 8 and 32 concurrent clients.

The real server (``python -m promptclf serve``, a subprocess) serves a real MiniLM LoRA student (trained
here for a few steps unless ``--run`` names one: speed does not depend on how well it was trained). Each
client sends one short BBC text per request, back to back (closed loop), ``--requests`` requests per
level; the clients are one asyncio loop with httpx in this process, on the same cores as the server.
Per level: throughput, p50/p99/max latency, requests dropped (an error or a non-200: must be 0), the
server's model passes (mean batch size) and the load average before and after.
Target (issue 15): p99 under 100 ms for one short text at 8 clients on 2 cores.

    python bench/bench_serve.py                          # float32 and int8, 1/8/32 clients
    python bench/bench_serve.py --run runs/student --dtypes float32 --clients 1 8 32
    python bench/bench_serve.py --onnx                   # also an int8 ONNX export, --max-batch 32 and 1

Figures go to stdout and to bench/results/serve.txt (``--out``); progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from promptclf.data.tables import bbc_sample, write_table  # noqa: E402


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_student(work: Path) -> Path:
    """A MiniLM LoRA student, a few steps on 60 BBC rows: the real architecture, quickly."""
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    df = bbc_sample(60, seed=3)[["text", "label"]]
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    data = write_table(df, work / "teacher.csv")
    opts = DistillOptions.build(recipe="minilm-lora", max_steps=4, max_length=64, test_fraction=0.2, patience=0)
    distill(data, work / "student", opts)
    return work / "student"


def short_texts(n: int) -> list[str]:
    """``n`` short texts: the first sentence of BBC articles, at most 120 characters (about 15-25 words)."""
    texts = []
    for text in bbc_sample(None, seed=8)["text"]:
        first = str(text).split(". ")[0][:120].strip()
        if len(first) > 20:
            texts.append(first)
    return [texts[i % len(texts)] for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, folder: Path, args: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "promptclf", "-q", "serve", str(folder), "--port", str(self.port), *args]
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 300) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("serve never became ready")

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/health", timeout=10).json())

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


async def load_level(url: str, clients: int, requests: int, texts: list[str]) -> dict[str, Any]:
    """``clients`` concurrent clients sharing ``requests`` requests, one text each; every outcome recorded."""
    latencies: list[float] = []
    failures: list[str] = []
    next_i = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one_client() -> None:
            nonlocal next_i
            while next_i < requests:
                i, next_i = next_i, next_i + 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", json={"text": texts[i % len(texts)]})
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code == 200 and len(r.json()["predictions"]) == 1:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures.append(f"{r.status_code} {r.text[:100]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "requests": requests,
        "answered": len(latencies),
        "dropped": requests - len(latencies),
        "failures": failures[:3],
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))],
        "max_ms": 1000 * lat[-1],
    }


def bench_config(folder: Path, label: str, args: list[str], a: argparse.Namespace, texts: list[str]) -> list[str]:
    lines = []
    server = Server(folder, args)
    ready = server.wait_ready()
    _log(f"[{label}] ready in {ready:.1f}s")
    lines.append(f"-- {label}: serve {' '.join(args) or '(defaults)'}; ready (load + bind) in {ready:.1f}s")
    try:
        asyncio.run(load_level(server.url, 4, 40, texts))  # warm-up: first passes, thread pools, connections
        for clients in a.clients:
            before_h = server.health()
            load_before = os.getloadavg()
            n = max(a.requests, 10 * clients)
            res = asyncio.run(load_level(server.url, clients, n, texts))
            load_after = os.getloadavg()
            after_h = server.health()
            passes = after_h["batches"] - before_h["batches"]
            model_ms = 1000 * (after_h["model_s"] - before_h["model_s"]) / max(passes, 1)
            answered = after_h["requests"] - before_h["requests"]
            target = "  (target p99 < 100 ms)" if clients == 8 else ""
            line = (
                f"{label:<16} {clients:>2} clients: {res['rps']:6.1f} req/s  p50 {res['p50_ms']:6.1f} ms  "
                f"p99 {res['p99_ms']:6.1f} ms  max {res['max_ms']:6.1f} ms  dropped {res['dropped']}/{n}  "
                f"model passes {passes} (mean batch {answered / max(passes, 1):.1f}, {model_ms:.1f} ms each)  "
                f"load {load_before[0]:.2f} -> {load_after[0]:.2f}{target}"
            )
            if res["failures"]:
                line += f"  failures e.g. {res['failures']}"
            _log(line)
            lines.append(line)
    finally:
        code = server.stop()
        lines.append(f"   SIGTERM -> exit code {code}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="A distill run folder to serve. Default: train a MiniLM student here.")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "int8"], choices=["float32", "bfloat16", "int8"])
    ap.add_argument("--onnx", action="store_true", help="Also export the student to int8 ONNX and serve that.")
    ap.add_argument(
        "--onnx-max-batch", nargs="+", type=int, default=[32, 1], help="--max-batch values to serve the export with."
    )
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=400, help="Requests per level (at least 10 per client).")
    ap.add_argument("--max-wait-ms", type=float, default=None, help="Passed to serve. [default: serve's]")
    ap.add_argument("--threads", type=int, default=None, help="Passed to serve (model threads). [default: serve's]")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.txt")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if a.run is None:
            t0 = time.perf_counter()
            folder = train_student(work)
            _log(f"trained the bench student in {time.perf_counter() - t0:.0f}s")
        else:
            folder = a.run
        texts = short_texts(500)
        words = statistics.median(len(t.split()) for t in texts)
        lines = [
            f"== promptclf serve, MiniLM LoRA student ({folder.name}), one short text per request "
            f"(median {words:.0f} words), closed-loop clients on 127.0.0.1 (asyncio + httpx, same machine)",
            f"cores: {os.cpu_count()}   load average at start (1/5/15 min): "
            + " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        ]
        extra = ["--max-wait-ms", str(a.max_wait_ms)] if a.max_wait_ms is not None else []
        extra += ["--threads", str(a.threads)] if a.threads is not None else []
        configs: list[tuple[Path, str, list[str]]] = [
            (folder, f"torch {d}", [*(["--dtype", d] if d != "float32" else []), *extra]) for d in a.dtypes
        ]
        if a.onnx:
            from promptclf.export.onnx_export import export_onnx
            from promptclf.export.options import ExportOptions

            exported = export_onnx(folder, work / "onnx-int8", ExportOptions(int8=True)).folder
            for mb in a.onnx_max_batch:
                configs.append((exported, f"onnx int8 b{mb}", ["--max-batch", str(mb), *extra]))
        for path, label, args in configs:
            lines += bench_config(path, label, args, a, texts)
        lines.append("load average at end (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    text = "\n".join(lines)
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
