"""Run the API with uvicorn: load the student, listen, stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, require
from .options import ServeOptions

log = logging.getLogger(__name__)


def serve(path: str | Path, options: ServeOptions | None = None) -> None:
    """Load the predictor in ``path`` and serve it until SIGTERM or SIGINT.

    The model loads before the port opens, so a bad folder fails at once and ``/health`` answers
    only once predictions can be made. On a signal, uvicorn stops accepting connections, lets
    requests in flight finish (up to ``graceful_s``), then the batcher stops; this returns normally.
    """
    opts = options or ServeOptions()
    require("fastapi", "serve", "promptclf serve")
    require("uvicorn", "serve", "promptclf serve")
    import uvicorn

    from ..export.manifest import is_export_dir
    from ..predict.loader import load_predictor
    from .app import create_app

    if opts.threads and not is_export_dir(path):  # an export folder runs on ONNX Runtime: no torch at all
        import torch

        torch.set_num_threads(opts.threads)
    t0 = time.perf_counter()
    predictor = load_predictor(path, merge=opts.merge is not False, dtype=opts.dtype, threads=opts.threads)
    log.info(
        "loaded %s in %.1fs (%s, %s): labels %s",
        path,
        time.perf_counter() - t0,
        predictor.device,
        opts.dtype,
        ", ".join(predictor.labels),
    )
    app = create_app(predictor, opts, name=str(path))
    config = uvicorn.Config(
        app,
        host=opts.host,
        port=opts.port,
        log_config=None,  # records go to the promptclf/uvicorn loggers; the CLI decides where they print
        log_level="info" if opts.access_log else "warning",
        access_log=opts.access_log,
        timeout_graceful_shutdown=opts.graceful_s,
        lifespan="on",
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # the port is open: now the address is worth printing
                log.info("serving on http://%s:%d (docs: /docs); Ctrl-C or SIGTERM stops", opts.host, opts.port)

    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn has already shut down gracefully; it re-raises the signal it caught, which a host
        # that maps SIGTERM/SIGINT to KeyboardInterrupt (the CLI) sees here. Stopping is the point.
        pass
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        if server.started:
            raise
        raise InputError(
            f"cannot listen on {opts.host}:{opts.port}: the port is taken or not allowed; pick another with --port"
        ) from exc
