"""Shared fixtures: a real llama.cpp server (session-wide) and a fault-injecting proxy in front of it.

Tests that need the server request ``llama_server`` (or ``fault_proxy``); without
llama-cpp-python's server installed they are skipped with the install hint. Other test
files keep their own fixtures locally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never reach the Hugging Face hub from tests: models and data ship in packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/servers.py

from servers import SERVER_MISSING, LlamaServer, server_available  # noqa: E402

from promptclf.testing.fake_server import FakeServer, Upstream  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that needs the llama.cpp server or a Ray cluster belongs to the slow tier too."""
    for item in items:
        if item.get_closest_marker("server") or item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server on SmolLM2-135M-Instruct (model alias ``smollm2``)."""
    if not server_available():
        pytest.skip(SERVER_MISSING)
    with LlamaServer() as server:
        yield server


@pytest.fixture()
def fault_proxy(llama_server: LlamaServer) -> Iterator[FakeServer]:
    """A fresh :class:`FakeServer` in front of the session's server (no faults until a test adds some)."""
    with FakeServer(Upstream(llama_server.root)) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own SQLite store, so no test reads another's cache or writes to ~/.cache."""
    monkeypatch.setenv("PROMPTCLF_STORE", str(tmp_path_factory.mktemp("store") / "store.sqlite"))
