"""Broken local models, and failures nobody anticipated, end in one line on stderr, never a traceback.

Each case runs the real CLI group (``promptclf label --provider local --model BROKEN``) in-process with
click's runner, on a model broken the way a user's download or folder breaks: a path that does not exist,
a truncated GGUF, a folder with only config.json, a folder with weights but no tokenizer. One subprocess run
checks that ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from promptclf.cli import main


@pytest.fixture(autouse=True)
def _fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty model cache (so a GGUF is converted, not read from an earlier copy) and no debug mode.
    monkeypatch.setenv("PROMPTCLF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROMPTCLF_DEBUG", "")  # restored after the test, even when --debug sets it


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": ["stocks fell", "the team won", "new phone out"], "label": ["biz", "sport", ""]}).to_csv(
        path, index=False
    )
    return path


def _label(tmp_path: Path, model: str | Path, *extra: str):  # type: ignore[no-untyped-def]
    args = [*extra, "label", "--provider", "local", "--model", str(model), str(_input(tmp_path))]
    return CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out.csv")])


def _one_line(res) -> str:  # type: ignore[no-untyped-def]
    """The failure's stderr, checked to be exactly one line of promptclf's, no traceback."""
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # our handler exited; nothing escaped
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("promptclf: error: "), lines[0]
    assert "Traceback" not in res.output
    return lines[0]


def _tiny_llama(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def test_missing_file(tmp_path: Path) -> None:
    res = _label(tmp_path, tmp_path / "nowhere" / "model.gguf")
    line = _one_line(res)
    assert res.exit_code == 2
    assert "does not exist" in line and "model.gguf" in line


def test_mistyped_folder_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    res = _label(tmp_path, "models/smol/v2")  # two slashes: a path, never a hub id
    assert "does not exist" in _one_line(res)
    assert res.exit_code == 2


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>")
    line = _one_line(_label(tmp_path, fake))
    assert "not a GGUF file" in line and "re-download" in line


@pytest.mark.parametrize("keep", [256 * 1024, "half"], ids=["header-cut", "tensors-cut"])
def test_truncated_gguf(tmp_path: Path, keep: int | str) -> None:
    from promptclf.resources import smollm2_gguf

    src = smollm2_gguf()
    n = src.stat().st_size // 2 if keep == "half" else int(keep)
    cut = tmp_path / "cut.gguf"
    with src.open("rb") as f:
        cut.write_bytes(f.read(n))  # a download cut short: in the vocabulary, or in the tensors
    res = _label(tmp_path, cut)
    line = _one_line(res)
    assert res.exit_code == 2
    assert "cut.gguf" in line and "is truncated" in line and "re-download" in line
    assert f"{n:,} bytes" in line
    assert not (tmp_path / "home" / "models").exists()  # refused before any conversion


def test_gguf_transformers_cannot_read(tmp_path: Path) -> None:
    # A complete, well-formed GGUF whose architecture transformers does not know: the conversion fails
    # inside transformers, after its one notice line, and leaves no half-written copy behind.
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "nosucharch")
    w.add_tensor("w", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    res = _label(tmp_path, path)
    assert res.exit_code == 4 and isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("promptclf: converting odd.gguf to float32 once"), res.stderr
    assert lines[1].startswith("promptclf: error: cannot load the ") and "odd.gguf" in lines[1], lines[1]
    assert "re-download" in lines[1] and "Traceback" not in res.output
    assert [p.name for p in (tmp_path / "home" / "models").iterdir()] == []


def test_unwritable_cache_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # No float32 copy can be written (the cache root is a file): the GGUF is used as is, said once per model.
    from promptclf.providers.local import provider as local

    (tmp_path / "home").write_text("not a folder")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    for _ in range(2):
        assert local._float32_copy(str(tmp_path), {"gguf_file": "m.gguf"}) == (str(tmp_path), {"gguf_file": "m.gguf"})
    said = [r for r in caplog.records if r.name.startswith("promptclf")]
    assert len(said) == 1 and said[0].levelname == "WARNING", said
    assert said[0].getMessage().startswith("could not cache the float32 copy"), said


def test_folder_without_weights(tmp_path: Path) -> None:
    folder = tmp_path / "noweights"
    _tiny_llama(folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    res = _label(tmp_path, folder)
    line = _one_line(res)
    assert res.exit_code == 2
    assert "has no weights" in line and "config.json" in line and "tokenizer" in line


def test_folder_without_config(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    assert "has no config.json" in _one_line(_label(tmp_path, folder))


def test_folder_with_weights_but_no_tokenizer(tmp_path: Path) -> None:
    folder = _tiny_llama(tmp_path / "notok")
    res = _label(tmp_path, folder)
    line = _one_line(res)
    assert res.exit_code == 4
    assert "tokenizer" in line and "tokenizer.json" in line and str(folder) in line


def test_unexpected_exception_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug, or a library failing where no stage expected it: the CLI's last-resort handler.
    import promptclf.label.labeler

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something\nunexpected broke")

    monkeypatch.setattr(promptclf.label.labeler, "label_file", boom)
    res = _label(tmp_path, "smollm2")
    line = _one_line(res)
    assert res.exit_code == 1
    assert line == ("promptclf: error: something unexpected broke (RuntimeError); rerun with --debug for the traceback")
    res = _label(tmp_path, "smollm2", "--debug")
    assert isinstance(res.exception, RuntimeError)  # --debug lets it through


def test_usage_errors_stay_clicks(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["label", "--shots", "many", str(_input(tmp_path))])
    assert res.exit_code == 2
    assert "Invalid value for '--shots'" in res.stderr and "Usage:" in res.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "noweights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    env = {**os.environ, "PROMPTCLF_HOME": str(tmp_path / "home")}
    env.pop("PROMPTCLF_DEBUG", None)
    args = [
        "label",
        "--provider",
        "local",
        "--model",
        str(folder),
        str(_input(tmp_path)),
        "-o",
        str(tmp_path / "o.csv"),
    ]
    plain = subprocess.run([sys.executable, "-m", "promptclf", *args], capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "promptclf", "--debug", *args], capture_output=True, text=True, env=env
    )
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "InputError" in debug.stderr


def test_student_folder_without_tokenizer(tmp_path: Path) -> None:
    # `promptclf predict` on a run folder whose files are incomplete: the same one line, naming the fix.
    import json

    folder = _tiny_llama(tmp_path / "student")
    spec = {"base": "x", "base_path": "x", "method": "full", "head": "lm", "labels": ["biz", "sport"], "max_length": 32}
    (folder / "student.json").write_text(json.dumps(spec))
    res = CliRunner().invoke(main, ["predict", str(folder), str(_input(tmp_path)), "-o", str(tmp_path / "p.csv")])
    line = _one_line(res)
    assert res.exit_code == 2
    assert "cannot load its tokenizer" in line and "tokenizer.json" in line
