"""Options for a labeling run, validated once at the edge and saved beside every run's outputs.

API keys are never fields here: they are read from the environment by the provider, so
``options.json`` can be shared without leaking a secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError
from ..providers.spec import ProviderSpec

ProviderName = Literal["auto", "together", "openai", "local"]

CALIBRATE_NEEDS_SCORING = (
    "--calibrate needs a scoring provider (the local model, --provider local): a chat provider answers with a "
    "label, not a probability for every label, so there is nothing to calibrate; drop --calibrate"
)


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
    # Local model only: what attends to the few-shot examples (see PrefixScorer.answer_only in providers/local_scorer.py).
    shot_attention: Literal["full", "answer"] = "full"
    # local teacher on a GPU: items scored per forward pass, padded, behind the shared
    # prefix; None = 8 on CUDA, 1 on CPU (LocalProvider.items_per_pass). Same scores either way.
    items_per_pass: int | None = Field(None, ge=1, le=64)

    # similar-example shots (promptclf.label.shots): "similar" shows each request the
    # --shots examples per class nearest to its texts (all-MiniLM-L6-v2 embeddings) and puts similar
    # texts in the same request. Without --examples, --shot-pool labeled rows per class (seeded,
    # stratified) form the pool and are not scored; with --examples the whole file is the pool.
    shot_selection: Literal["random", "similar"] = "random"
    shot_pool: int = Field(
        20, ge=1, le=100_000, description="similar shots: input rows per class set aside as the pool"
    )

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
    # circuit breaker (promptclf.providers.breaker): stop sending when the provider is down
    breaker_failures: int = Field(
        10,
        ge=1,
        description="circuit breaker: connection failures or 5xx in a row, with no success, that stop the run",
    )
    breaker_window_s: float = Field(
        10.0,
        ge=0,
        description="circuit breaker: seconds the failures must span (unless a request runs out of retries first)",
    )
    # exit codes: a run that labels fewer rows than this share fails (exit code 8)
    min_coverage: float | None = Field(
        None, ge=0.0, le=1.0, description="fail (exit code 8) when fewer than this share of the rows is labeled ok"
    )

    # calibration: contextual calibration of a scoring provider's label probabilities
    # (promptclf.label.scoring_runner); chat providers give no distribution to calibrate.
    calibrate: bool = False

    # provider batch API (promptclf.label.batch_runner): the job as asynchronous batches at
    # the batch price instead of one request at a time; validation re-asks go synchronously.
    batch_api: bool = False
    poll_interval_s: float = Field(30.0, gt=0, description="seconds between polls of a running batch")
    # Lines a batch left unanswered go to a follow-up batch if at least this many, else synchronously.
    batch_min_requests: int = Field(100, ge=1)

    # label confidence from chat providers (promptclf.label.confidence): ask for token
    # log-probabilities with this many alternatives per token (0: ask for none; pred_prob stays
    # empty). A server that rejects the parameter is asked without it for the rest of the run.
    top_logprobs: int = Field(5, ge=0, le=20, description="chat providers: top alternatives per answer token")

    # streaming (promptclf.label.stream): label_file reads, labels and writes this many
    # rows at a time; batches never span two chunks, so it is part of what decides the requests.
    chunk_rows: int = Field(10_000, ge=1, description="rows read, labeled and written at a time")

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
        if self.shot_selection == "similar" and self.shots and self.shot_pool < self.shots:
            raise ValueError(
                f"--shot-pool {self.shot_pool} is smaller than --shots {self.shots}: the pool must hold at least "
                "the examples one prompt shows per class; raise --shot-pool"
            )
        if self.calibrate and (self.base_url or self.provider in ("openai", "together")):
            raise ValueError(CALIBRATE_NEEDS_SCORING)
        if self.batch_api and self.provider == "local":
            raise ValueError(
                "--batch-api sends the job to a provider's batch endpoint and the local model has none: "
                "use --provider openai or together, or drop --batch-api"
            )
        return self

    def store_path(self) -> Path:
        return Path(self.store) if self.store else default_store()

    def provider_spec(self) -> ProviderSpec:
        """The provider these options ask for, resolved (``--provider auto`` decided here, once)."""
        return ProviderSpec.resolve(
            self.provider,
            self.model,
            self.base_url,
            timeout_s=self.timeout_s,
            temperature=self.temperature,
            top_logprobs=self.top_logprobs,
            shot_attention=self.shot_attention,
            items_per_pass=self.items_per_pass,
        )

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
