"""The ``promptclf`` command line: a thin layer that parses options, calls the library and prints.

Errors from :mod:`promptclf.errors` become one line on stderr and the class's exit code;
``--debug`` or ``PROMPTCLF_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys

from .group import main

__all__ = ["main"]


class _OneLine(logging.Handler):
    """The library's log records as one ``promptclf: ...`` line each on stderr (``warning:``/``error:``
    above INFO), as the library printed them before it logged. It stays silent while any other
    handler is on the ``promptclf`` logger, so a command that installs its own prints each line once."""

    def emit(self, record: logging.LogRecord) -> None:
        if any(h is not self for h in logging.getLogger("promptclf").handlers):
            return
        level = "" if record.levelno < logging.WARNING else "warning: " if record.levelno < logging.ERROR else "error: "
        try:
            print(f"promptclf: {level}{record.getMessage()}", file=sys.stderr)
        except Exception:  # logging must never break a run
            self.handleError(record)


def _show_logs() -> None:
    logger = logging.getLogger("promptclf")
    if not any(isinstance(h, _OneLine) for h in logger.handlers):
        logger.addHandler(_OneLine())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def _register() -> None:
    # Each stage's commands live in their own module; importing them is cheap because
    # heavy libraries (torch, langchain) are imported inside the commands.
    from . import data as _data  # noqa: F401
    from . import distill as _distill  # noqa: F401
    from . import label as _label  # noqa: F401
    from . import report as _report  # noqa: F401
    from . import review as _review  # noqa: F401


_register()
_show_logs()
