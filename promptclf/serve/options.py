"""How ``serve`` listens, batches and bounds requests: its options, declared once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeOptions(BaseModel):
    """The HTTP server around a student (``promptclf serve``); the CLI's flags are generated from these fields."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    max_batch: int = Field(
        32, ge=1, description="Most texts the model runs in one pass: concurrent requests are batched up to this."
    )
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="How long the first request of a batch waits for others to join it (ms). "
        "Requests that arrive while the model runs join the next batch without waiting.",
    )
    max_texts: int = Field(256, ge=1, description="Most texts one request may send (more: 422).")
    max_text_chars: int = Field(
        100_000, ge=1, description="Longest text accepted, in characters (longer: 422; the model truncates anyway)."
    )
    max_body_bytes: int = Field(1_000_000, ge=64, description="Largest request body accepted (larger: 413).")
    max_queue: int = Field(
        4096, ge=1, description="Most texts waiting for the model; beyond it requests get 503 with Retry-After."
    )
    dtype: Literal["float32", "bfloat16", "int8"] = Field(
        "float32",
        description="A run folder's precision: int8 dynamic quantization (~2-3x faster on CPU), bfloat16 (half the "
        "memory); both merge the adapter. An export folder's was fixed by `promptclf export`: leave it out.",
    )
    merge: bool | None = Field(
        None,
        description="Fold a LoRA adapter into the weights before serving: fewer, larger matrix products per "
        "request (probabilities move by float rounding only). [default: on; --no-merge keeps it separate]",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Threads for the model (torch; ONNX Runtime for an export folder). [default: one per core]",
    )
    access_log: bool = Field(False, description="Log one line per request (uvicorn's access log).")
    graceful_s: int = Field(10, ge=1, description="On SIGTERM/SIGINT, how long requests in flight get to finish (s).")
