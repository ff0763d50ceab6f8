"""``promptclf serve``: the student behind an HTTP JSON API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..options import build_options
from ..serve.options import ServeOptions
from .group import main
from .logs import attach
from .options import flags_from, given


@main.command()
@click.argument("run", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@flags_from(ServeOptions)
def serve(run: Path, **options: Any) -> None:
    """Serve the student in RUN (a distill run folder, or an export folder) over HTTP until Ctrl-C or SIGTERM.

    POST /predict with {"text": "..."} or {"texts": [...]} returns each text's label, its
    probability and every label's probability; GET /health says the model is up; /docs has the
    OpenAPI documentation. Concurrent requests are batched into one model pass (--max-batch,
    --max-wait-ms). Needs pip install 'promptclf[serve]'.
    """
    from ..serve.server import serve as run_server

    opts = build_options(ServeOptions, given(options))
    # uvicorn's own records (a port in use, the access log) print through the same one-line handler.
    attach("uvicorn.error")
    attach("uvicorn.access")
    run_server(run, opts)
