"""Start real servers for tests and benchmarks: llama.cpp's OpenAI-compatible server on SmolLM2.

``LlamaServer`` runs ``python -m llama_cpp.server`` as a subprocess on a free port and waits
until ``/v1/models`` answers. It is used by the session fixture in ``conftest.py`` and by the
benchmarks in ``bench/`` (which import this file by path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVER_MISSING = "llama-cpp-python's server is not installed: pip install 'promptclf[server]'"
MODEL_ALIAS = "smollm2"


def server_available() -> bool:
    """True when ``llama_cpp.server`` can be imported (the server extra is installed)."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def free_port() -> int:
    """A TCP port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on SmolLM2-135M-Instruct, as a context manager.

    ``base_url`` is ``http://127.0.0.1:PORT/v1``; ``root`` is without ``/v1`` (for the proxy).
    """

    def __init__(self, n_ctx: int = 8192, n_threads: int | None = None, startup_timeout_s: float = 120.0) -> None:
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        fd, log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> LlamaServer:
        from promptclf.resources import smollm2_gguf

        model = smollm2_gguf()
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--verbose",
            "False",
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama.cpp server exited with code {self.proc.returncode} before answering; "
                    f"command: {' '.join(cmd)}\n--- server output ---\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200 and json.load(resp).get("data"):
                        return self
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"llama.cpp server did not answer {self.base_url}/models within {self.startup_timeout_s:.0f}s\n"
            f"--- server output ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
