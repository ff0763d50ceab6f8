"""The library logs; the CLI prints each record as one line on stderr, and -q / -v set how much."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from promptclf.cli import main
from promptclf.cli.logs import OneLineFormatter, install, stage_of


def _line(name: str, level: int, msg: str) -> str:
    return OneLineFormatter().format(logging.LogRecord(name, level, __file__, 1, msg, None, None))


def test_each_record_is_one_line_tagged_by_its_stage() -> None:
    assert _line("promptclf.label.batch_runner", logging.INFO, "submitted batch b1") == "promptclf: submitted batch b1"
    assert _line("promptclf.providers.hosted", logging.WARNING, "no logprobs") == "promptclf: warning: no logprobs"
    assert _line("promptclf.distill.train", logging.INFO, "training minilm") == "[distill] training minilm"
    assert _line("promptclf.distill.run", logging.WARNING, "one row") == "[distill] warning: one row"
    assert _line("promptclf.predict.student", logging.ERROR, "a\nb") == "[predict] error: a b"
    assert stage_of("promptclf") == "promptclf" and stage_of("promptclf.review.queue") == "review"


def test_install_sets_the_level_once_per_handler() -> None:
    logger = logging.getLogger("promptclf")
    before = list(logger.handlers)
    try:
        install(-1)
        assert logger.level == logging.WARNING
        install(1)
        assert logger.level == logging.DEBUG
        install(0)
        assert logger.level == logging.INFO
        assert len(logger.handlers) == len(before) or len(logger.handlers) == len(before) + 1
        install(0)
        assert sum(type(h).__name__ == "StderrHandler" for h in logger.handlers) == 1
    finally:
        install(0)


@pytest.mark.parametrize(("flag", "level"), [("-q", logging.WARNING), ("-v", logging.DEBUG), (None, logging.INFO)])
def test_group_flags_set_the_level(tmp_path: Path, flag: str | None, level: int) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\nhello\n")
    args = ([flag] if flag else []) + ["label", str(src), "--batch-size", "0"]
    try:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2  # the bad option still ends the run with one line
        assert logging.getLogger("promptclf").level == level
    finally:
        install(0)


def test_library_records_reach_stderr_through_the_cli_handler(capsys: pytest.CaptureFixture[str]) -> None:
    install(0)
    logging.getLogger("promptclf.distill.run").info("hello from distill")
    logging.getLogger("promptclf.label.x").debug("not shown at the default level")
    err = capsys.readouterr().err
    assert "[distill] hello from distill" in err and "not shown" not in err


def test_the_cli_puts_the_sigterm_handler_back(tmp_path: Path) -> None:
    import signal

    def mine(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        CliRunner().invoke(main, ["sample", "-n", "5", "-o", str(tmp_path / "s.csv")])
        assert signal.getsignal(signal.SIGTERM) is mine  # a host process keeps its own handler
    finally:
        signal.signal(signal.SIGTERM, before)
