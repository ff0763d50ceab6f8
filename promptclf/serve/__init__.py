"""Serving a trained student over HTTP (``promptclf serve``; ``pip install 'promptclf[serve]'``).

Contract: :func:`~.server.serve` loads a predictor (:func:`promptclf.predict.loader.load_predictor`: a
distill run folder, or an ONNX export folder) and serves it with uvicorn until SIGTERM/SIGINT, letting requests
in flight finish. :func:`~.app.create_app` builds the FastAPI app around a loaded predictor:

* ``POST /predict`` with ``{"text": "..."}`` or ``{"texts": [...]}`` answers
  ``{"predictions": [{"label", "prob", "probs": {label: p}}], "model"}``, one per text, in order;
* ``GET /health``: model loaded, labels, device, uptime and request/batch counts; ``/docs``: OpenAPI.

Concurrent requests are micro-batched (:class:`~.batcher.MicroBatcher`): up to ``max_batch`` texts or
``max_wait_ms`` after the first, one model pass in one worker thread, each request given its own rows.
Bad input gets a 4xx with one line in ``{"detail": ...}`` (400 not JSON, 413 body too large, 415 not sent
as JSON, 422 missing field, empty or too-long text, too many texts), a full queue 503; never a 500. Options: :class:`~.options.ServeOptions`.
Only this package imports fastapi and uvicorn, lazily through ``server.serve`` with the install hint.
"""
