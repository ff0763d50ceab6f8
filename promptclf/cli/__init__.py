"""The ``promptclf`` command line: a thin layer that parses options, calls the library and prints.

Errors from :mod:`promptclf.errors` become one line on stderr and the class's exit code;
``--debug`` or ``PROMPTCLF_DEBUG=1`` shows the traceback instead. The library's log records are
printed one line each by :mod:`.logs`; ``-q`` / ``-v`` set how much.
"""

from __future__ import annotations

from .group import main
from .logs import install

__all__ = ["main"]


def _register() -> None:
    # Each stage's commands live in their own module; importing them is cheap because
    # heavy libraries (torch, langchain) are imported inside the commands.
    from . import data as _data  # noqa: F401
    from . import distill as _distill  # noqa: F401
    from . import export as _export  # noqa: F401
    from . import label as _label  # noqa: F401
    from . import report as _report  # noqa: F401
    from . import review as _review  # noqa: F401
    from . import serve as _serve  # noqa: F401


_register()
install()
