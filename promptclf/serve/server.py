"""Run the API with uvicorn: load the student, listen, stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, require
from .options import ServeOptions

log = logging.getLogger(__name__)


def serve(path: str | Path, options: ServeOptions | None = None) -> None:
    """Load the predictor in ``path`` and serve it until SIGTERM or SIGINT.

    The port is taken first (a port in use fails at once, not after the model has loaded), then the
    model loads, then the server answers, so ``/health`` answers only once predictions can be made. On a signal, uvicorn stops accepting connections, lets
    requests in flight finish (up to ``graceful_s``), then the batcher stops; this returns normally.
    """
    opts = options or ServeOptions()
    require("fastapi", "serve", "promptclf serve")
    require("uvicorn", "serve", "promptclf serve")
    from ..export.manifest import is_export_dir

    if opts.threads and not is_export_dir(path):  # an export folder runs on ONNX Runtime: no torch at all
        import torch

        torch.set_num_threads(opts.threads)
    sock = _bind(opts.host, opts.port)
    try:
        _serve_on(sock, path, opts)
    finally:
        sock.close()


def _serve_on(sock: socket.socket, path: str | Path, opts: ServeOptions) -> None:
    import uvicorn

    from ..predict.loader import load_predictor
    from .app import create_app

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
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn has already shut down gracefully; it re-raises the signal it caught, which a host
        # that maps SIGTERM/SIGINT to KeyboardInterrupt (the CLI) sees here. Stopping is the point.
        pass
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        if server.started:
            raise
        raise InputError(f"cannot serve on {opts.host}:{opts.port}; see the line above") from exc


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (uvicorn listens on it), or one line saying why there is none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror})") from exc
    family, kind, proto, _, address = infos[0]
    # The protocol must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do, and with
    # Nagle on, a response written in two parts waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop may rebind
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server holds the port?); "
            "pick another with --port"
        ) from exc
    return sock
