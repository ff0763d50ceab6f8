"""What ``export`` writes and how: its options, declared once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExportOptions(BaseModel):
    """How a student is exported (``promptclf export RUN``)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["onnx"] = Field("onnx", description="Export format (ONNX is the one there is).")
    int8: bool = Field(
        False,
        description="Quantize the weights to int8 (ONNX Runtime dynamic quantization): about 4x smaller and "
        "faster on CPU; probabilities shift slightly.",
    )
    opset: int = Field(17, ge=14, le=21, description="ONNX opset version of the exported graph.")
