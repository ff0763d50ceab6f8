"""What ``predict`` reads and how: the options of a student's prediction run, declared once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PredictOptions(BaseModel):
    """How a student labels a file (``predict``); the Ray engine's own settings are :class:`~.ray_engine.RayOptions`."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: this process. ray: Ray Data over a file or a folder of shards, one Parquet shard out "
        "per shard in (pip install 'promptclf[ray]').",
    )
    text_col: str | None = Field(None, description="Text column. Default: the one the student was trained with.")
    batch_size: int = Field(32, ge=1, description="Texts per forward pass.")
    merge: bool = Field(False, description="Merge the LoRA adapter into the weights before predicting.")
    probs: bool = Field(False, description="Also write one prob_<label> column per class.")
    dtype: Literal["float32", "bfloat16", "int8"] = Field(
        "float32",
        description="int8: dynamic quantization, ~3x faster on CPU; bfloat16: half the memory. Both merge the adapter.",
    )
    split: str | None = Field(
        None, description="Split of a Hugging Face dataset INPUT (a name or a save_to_disk folder)."
    )
    chunk_rows: int = Field(
        8192, ge=1, description="Rows read, predicted and written at a time (memory stays flat for any input size)."
    )


class RayOptions(BaseModel):
    """Where and how wide ``predict --engine ray`` runs."""

    address: str | None = Field(
        None, description="Ray cluster to attach to (e.g. auto, or HOST:6379). Default: start a local one."
    )
    workers: int | None = Field(
        None, ge=1, description="Student workers (actors). [default: one per GPU, else one per CPU core]"
    )
    batch_rows: int = Field(512, ge=1, description="Rows a worker predicts per call (Ray Data batch).")
    object_store_mb: int | None = Field(
        None, ge=64, description="Object store of a local cluster. [default: 10% of memory, 256 MB to 2 GB]"
    )
