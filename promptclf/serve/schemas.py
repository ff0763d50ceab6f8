"""The request and response bodies of the HTTP API (pydantic, so ``/docs`` shows them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PredictRequest(BaseModel):
    """One text (``text``) or several (``texts``), never both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "Shares fell sharply after the profit warning."}, {"texts": ["first", "second"]}]
        },
    )

    text: str | None = Field(None, description="One text to classify.")
    texts: list[str] | None = Field(None, description="Several texts to classify; answers come back in this order.")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send either 'text' (a string) or 'texts' (a list of strings), not both or neither")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Prediction(BaseModel):
    """The student's answer for one text."""

    label: str = Field(description="The most probable label.")
    prob: float = Field(description="Its probability (temperature-scaled when distill fitted a temperature).")
    probs: dict[str, float] = Field(description="The probability of every label, in the student's label order.")
    labels: list[str] | None = Field(
        None,
        description="A multi-label student's label set: every label whose probability reaches the threshold distill "
        "tuned for it (probs are then independent per label); null for a single-label student.",
    )


class PredictResponse(BaseModel):
    """One prediction per text sent, in the order sent."""

    predictions: list[Prediction]
    model: str = Field(description="The folder being served.")


class HealthResponse(BaseModel):
    """Whether the model is loaded and answering, and what it has done since start."""

    status: Literal["ok", "stopping"]
    model_loaded: bool
    model: str = Field(description="The folder being served.")
    labels: list[str]
    device: str
    dtype: str
    temperature: float
    uptime_s: float
    requests: int = Field(description="Requests answered since start.")
    texts: int = Field(description="Texts predicted since start.")
    batches: int = Field(description="Model passes since start (fewer than requests when requests were batched).")
    largest_batch: int
    model_s: float = Field(
        description="Seconds spent in the model since start (the rest of a request's time is HTTP and queueing)."
    )
    waiting: int = Field(description="Texts queued for the model right now.")
    in_model: int = Field(description="Texts in the batch the model is running right now.")
    max_batch: int
    max_texts: int


class ErrorResponse(BaseModel):
    """Every error: one line saying what was wrong and how to fix it."""

    detail: str
