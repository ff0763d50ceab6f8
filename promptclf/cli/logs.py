"""The CLI's one handler for the library's log records: one line each on stderr.

The library logs through ``logging.getLogger("promptclf...")`` and never prints. Here a record
becomes ``promptclf: message`` (``warning:``/``error:`` above INFO); the stages whose lines have
always carried their own tag keep it (``[distill] training ...``), so scripts that read stderr
see the lines they always saw. ``promptclf -q`` shows warnings and errors only, ``-v`` adds debug
records. Progress bars write to the terminal directly; they are not log records.
"""

from __future__ import annotations

import logging
import sys

# Stages whose messages are tagged with their name rather than "promptclf:".
TAGGED = {"distill", "predict", "review", "demo"}


def stage_of(logger_name: str) -> str:
    """``promptclf.distill.train`` -> ``distill``; the package root -> ``promptclf``."""
    parts = logger_name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "promptclf" else parts[0]


class OneLineFormatter(logging.Formatter):
    """``promptclf: [warning: ]message`` or ``[stage] [warning: ]message`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else "warning: " if record.levelno < logging.ERROR else "error: "
        stage = stage_of(record.name)
        head = f"[{stage}]" if stage in TAGGED else "promptclf:"
        return f"{head} {level}{' '.join(record.getMessage().splitlines()) or ''}"


class StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (a test may swap it), one line per record."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(OneLineFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break a run
            self.handleError(record)


def install(verbosity: int = 0) -> logging.Handler:
    """Put the one handler on the ``promptclf`` logger (once) and set its level: -1 quiet, 0 info, 1 debug."""
    logger = logging.getLogger("promptclf")
    handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        handler = StderrHandler()
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    logger.propagate = True  # pytest's caplog and a host application's handlers still see the records
    return handler


def attach(name: str) -> None:
    """Print another library's logger (``uvicorn.error``) through the same one handler, not its own."""
    handler = install_handler()
    logger = logging.getLogger(name)
    if handler not in logger.handlers:
        logger.addHandler(handler)
    logger.propagate = False  # printed once, here


def install_handler() -> logging.Handler:
    """The one handler on the ``promptclf`` logger, added at the current level if it is not there yet."""
    logger = logging.getLogger("promptclf")
    handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
    return handler if handler is not None else install()
