"""Options for a labeling run, validated once at the edge and saved beside every run's outputs.

API keys are never fields here: they are read from the environment by the provider, so
``options.json`` can be shared without leaking a secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..eval.cascade import VALIDATION_FILE, validation_path
from ..options import build_options
from ..providers.spec import ProviderSpec
from .candidates import k_error

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


def _leaves(entries: list[dict[str, object]]) -> int:
    """The labels of ``labels`` entries: a label tree's entries (with ``children``) count their leaves."""
    n = 0
    for e in entries:
        kids = e.get("children") if isinstance(e, dict) else None
        n += _leaves(kids) if isinstance(kids, list) and kids else 1  # type: ignore[arg-type]
    return n


class LabelOptions(BaseModel):
    """Everything that decides what a labeling run sends and how it behaves."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    text_cols: list[str] = Field(
        default_factory=lambda: ["text"],
        min_length=1,
        description="Text column; repeat for several (rendered as 'col: value' lines).",
        json_schema_extra={"flag": "--text-col"},
    )
    label_col: str | None = Field("label", description="Column with gold/example labels (optional on rows).")
    # LabelSet.to_dict(); None = infer from label_col. The CLI's --labels takes a spec and parses it.
    labels: list[dict[str, object]] | None = Field(None, json_schema_extra={"cli": False})
    ordinal: bool = Field(
        False,
        description="The labels are an ordered scale, lowest first (e.g. ratings 0-5): the prompt says so and "
        "each row gets pred_score, its expected score where probabilities are known. A labels file can say "
        "'ordinal: true' instead.",
    )
    multi_label: bool = Field(
        False,
        description="Each text gets zero or more labels: the answer is a list per text, pred_labels a JSON list "
        "(pred_label the labels joined with ';'); gold cells are JSON lists or ';'-separated. A labels file can "
        "say 'multi_label: true' instead. Zero-shot. The local model asks yes/no per label (P(yes) >= 0.5).",
    )
    tree_mode: Literal["hierarchy", "flat"] = Field(
        "hierarchy",
        description="With a label tree (a labels file whose entries have children): hierarchy asks for the top "
        "level first, then the chosen node's children (each prompt lists only siblings; pred_label is the leaf's "
        "path, pred_prob the product of the stages'); flat asks for the leaves in one prompt, named by path.",
    )
    # large label sets (promptclf.label.candidates)
    candidates: int | None = Field(
        None,
        ge=1,
        description="Large label sets: each request shows only the K labels nearest to its texts (all-MiniLM-L6-v2 "
        "embeddings of each label's 'name: description' against the text; a chat batch shows the union of its "
        "texts'); answers are still checked against the whole set. The local model scores only each text's K. "
        "pred_candidates keeps each row's K; eval reports how often the gold label was among them.",
    )
    max_chars: int = Field(4000, ge=50, description="Truncate item texts in the prompt to this many characters.")
    max_item_chars: int = Field(
        200_000, ge=1, description="Rows longer than this many characters get status error instead of a label."
    )

    # prompt
    template: str | None = Field(
        None,
        description="Jinja template for the user message (default prompts/batch.j2, or score.j2 for local).",
        json_schema_extra={"path": "file"},
    )
    system_template: str | None = Field(
        None,
        description="Jinja template for the system message (default prompts/system.j2).",
        json_schema_extra={"path": "file"},
    )
    shots: int = Field(0, ge=0, le=100, description="Few-shot examples per class (0 = zero-shot).")
    examples: str | None = Field(
        None,
        description="File of labeled examples for --shots (default: labeled rows of INPUT, which are then not scored).",
        json_schema_extra={"path": "file"},
    )
    shot_max_chars: int = Field(
        400, ge=20, description="Truncate each few-shot example to this many characters (shorter = cheaper prompts)."
    )
    seed: int = Field(0, description="Seed for shot selection.")
    # Local model only: what attends to the few-shot examples (PrefixScorer.answer_only in providers/local/scorer.py).
    shot_attention: Literal["full", "answer"] = Field(
        "full",
        description="Local model with --shots: 'full' scores the exact prompt; 'answer' lets only the answer attend "
        "to the examples, not the item (10-shot at 1.2x zero-shot cost instead of 2.2x on SmolLM2; changes some labels).",
    )
    # local teacher on a GPU: same scores either way (LocalProvider.items_per_pass).
    items_per_pass: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Local model: items scored per forward pass, padded, behind the shared prefix (same scores). "
        "Default: 8 on a CUDA GPU, 1 on CPU. At most --batch-size items share a pass.",
    )

    # similar-example shots (promptclf.label.shots)
    shot_selection: Literal["random", "similar"] = Field(
        "random",
        description="random: the same seeded --shots per class in every prompt. similar: each request gets the "
        "--shots per class nearest to its texts (all-MiniLM-L6-v2 embeddings, cached in the store), and chat "
        "batches group similar texts; the local model then gives every text its own prompt (no shared prefix).",
    )
    shot_pool: int = Field(
        20,
        ge=1,
        le=100_000,
        description="--shot-selection similar without --examples: labeled rows per class of INPUT set aside "
        "(seeded) as the pool similar shots are picked from; they are not scored. With --examples the whole file "
        "is the pool.",
    )

    # provider
    provider: ProviderName = Field(
        "auto", description="auto: Together if TOGETHER_API_KEY, else OpenAI if OPENAI_API_KEY, else local."
    )
    model: str | None = Field(
        None,
        description="Model id (default per provider: Llama-3.3-70B on Together, gpt-4o-mini on OpenAI, SmolLM2-135M "
        "locally; local also takes a path or hub id).",
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible server (vLLM, llama.cpp, Ollama), e.g. http://127.0.0.1:8000/v1."
    )
    structured: Literal["auto", "json_schema", "json_object", "tools", "prompt"] = Field(
        "auto", description="How to ask for structured output."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int | None = Field(
        None, ge=16, description="Completion token cap per request (default scales with batch size)."
    )
    timeout_s: float = Field(60.0, gt=0, description="Seconds per request.", json_schema_extra={"flag": "--timeout"})

    # engine
    batch_size: int = Field(10, ge=1, le=200, description="Items per request.")
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight.")
    rpm: float | None = Field(None, gt=0, description="Requests-per-minute limit.")
    tpm: float | None = Field(None, gt=0, description="Tokens-per-minute limit.")
    max_retries: int = Field(6, ge=0, description="Transport retries per request (429/5xx/timeouts).")
    max_reasks: int = Field(3, ge=0, description="Re-ask rounds for missing/invalid items (smaller batches each time).")
    retry_max_wait_s: float = Field(
        60.0, gt=0, description="Longest wait between transport retries, Retry-After included (seconds)."
    )
    # circuit breaker (promptclf.providers.breaker): stop sending when the provider is down
    breaker_failures: int = Field(
        10,
        ge=1,
        description="Circuit breaker: connection failures or 5xx in a row, with no success, that stop the run.",
    )
    breaker_window_s: float = Field(
        10.0,
        ge=0,
        description="Circuit breaker: seconds those failures must span (unless a request runs out of retries first).",
    )
    min_coverage: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Fail with exit code 8 when fewer than this share (0-1) of the rows is labeled ok.",
    )

    # contextual calibration of a scoring provider's label probabilities (promptclf.label.scoring_runner);
    # chat providers give no distribution to calibrate.
    calibrate: bool = Field(
        False,
        description="Local model: contextual calibration (divide each item's label probabilities by those the same "
        "prompt gives content-free inputs 'N/A', '', '[MASK]', then renormalise). Off by default: see the README "
        "for when it helps.",
    )

    # provider batch API (promptclf.label.batch_runner): validation re-asks go synchronously.
    batch_api: bool = Field(
        False,
        description="Send the job as a provider batch (OpenAI, Together; or a --base-url server with batch "
        "endpoints) at the batch price; polls until done, resumes the same batch after a kill. Re-asks go "
        "synchronously.",
    )
    poll_interval_s: float = Field(
        30.0,
        gt=0,
        description="--batch-api: seconds between polls of a running batch.",
        json_schema_extra={"flag": "--poll-interval"},
    )
    batch_min_requests: int = Field(
        100,
        ge=1,
        description="--batch-api: lines a batch left unanswered go to a follow-up batch if at least this many, "
        "else synchronously.",
    )

    # student-first cascade (promptclf.predict.cascade): the student labels the rows it is sure of.
    student: str | None = Field(
        None,
        description="A student run folder (promptclf distill): it predicts every row first and keeps the rows whose "
        "top probability is at least --threshold; only the rest go to the LLM. Column pred_source says which.",
    )
    threshold: float | Literal["auto"] | None = Field(
        None,
        description="--student: keep the student's label where its probability is >= this, in (0, 1]; or 'auto': "
        "the smallest threshold meeting --target-agreement on the student's validation rows. Default with "
        "--student: auto.",
    )
    target_agreement: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="--threshold auto: share of the student's validation rows on which the cascade must agree "
        "with the teacher's labels (the LLM's rows count as agreeing). Default 0.98.",
    )

    # label confidence from chat providers (promptclf.label.confidence)
    top_logprobs: int = Field(
        5,
        ge=0,
        le=20,
        description="Chat providers: ask for token log-probabilities with this many alternatives, for pred_prob and "
        "pred_probs (0: ask for none). A server that rejects them is asked without them for the rest of the run.",
    )

    # streaming (promptclf.label.stream): batches never span two chunks, so it decides the requests too.
    chunk_rows: int = Field(
        10_000,
        ge=1,
        description="Rows read, labeled and appended to the output at a time (memory stays flat for any input size).",
    )

    # bookkeeping
    store: str | None = Field(
        None, description="SQLite store (default $PROMPTCLF_STORE or ~/.cache/promptclf/store.sqlite)."
    )
    prices: str | None = Field(
        None, description="JSON price table overriding the packaged one.", json_schema_extra={"path": "file"}
    )
    hourly_price: float | None = Field(
        None,
        ge=0.0,
        description="Dollars per hour of the machine serving a --base-url model with no list price: the run and "
        "the report price it by machine time.",
    )
    no_cache: bool = Field(False, description="Do not reuse stored responses (they are still recorded).")

    @field_validator("text_cols")
    @classmethod
    def _nonempty_cols(cls, v: list[str]) -> list[str]:
        cols = [c.strip() for c in v if c.strip()]
        if not cols:
            raise ValueError("--text-col must name at least one column")
        return cols

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip().lower()
            if text == "auto":
                return "auto"
            try:
                v = float(text)
            except ValueError:
                raise ValueError(f"--threshold {v!r}: give a probability in (0, 1], e.g. 0.9, or 'auto'") from None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not 0.0 < float(v) <= 1.0:
            raise ValueError(f"--threshold {v}: give a probability in (0, 1], e.g. 0.9, or 'auto'")
        return v

    @model_validator(mode="after")
    def _check(self) -> LabelOptions:
        self._check_cascade()
        self._check_multi_label()
        if self.candidates is not None and self.labels and k_error(self.candidates, _leaves(self.labels)):
            raise ValueError(k_error(self.candidates, _leaves(self.labels)))
        if self.base_url and self.provider == "local":
            raise ValueError("--base-url points at a server; use --provider openai (OpenAI-compatible) with it")
        if self.hourly_price is not None and not self.base_url:
            raise ValueError(
                "--hourly-price prices the machine serving a --base-url model; hosted providers are priced per "
                "token (add a model with --prices), and 'report --hourly-price' prices local runs"
            )
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

    def _check_multi_label(self) -> None:
        """--multi-label is zero-shot and goes with no option that assumes one label per text."""
        if not self.multi_label:
            return
        clash = [flag for flag, on in (("--ordinal", self.ordinal), ("--student", self.student)) if on]
        if clash:
            raise ValueError(f"--multi-label does not go with {', '.join(clash)} (they assume one label per text)")
        if self.shots:
            raise ValueError(
                "--multi-label is zero-shot for now: few-shot examples are chosen per class, one label each; "
                "drop --shots"
            )

    def _check_cascade(self) -> None:
        """--student names a distill run folder; --threshold and --target-agreement only go with it."""
        if self.student is None:
            if self.threshold is not None or self.target_agreement is not None:
                flag = "--threshold" if self.threshold is not None else "--target-agreement"
                raise ValueError(f"{flag} sets the student-first cascade: add --student RUN (a distill run folder)")
            return
        folder = Path(self.student)
        if not ((folder / "student.json").is_file() or (folder / "export.json").is_file()):
            what = "no such folder" if not folder.is_dir() else "no student.json or export.json in it"
            raise ValueError(
                f"--student {self.student}: not a student run folder ({what}); pass a folder written by "
                "'promptclf distill ... -o FOLDER' (or by 'promptclf export')"
            )
        if self.target_agreement is not None and self.threshold not in (None, "auto"):
            raise ValueError(
                f"--target-agreement chooses the threshold of --threshold auto, not of --threshold {self.threshold}; "
                "drop one of them"
            )
        if self.threshold in (None, "auto") and validation_path(folder) is None:
            raise ValueError(
                f"--threshold auto measures the cascade on the student's validation rows, and {folder} has no "
                f"{VALIDATION_FILE} (a distill run from before the cascade, or an export whose run is not here): "
                "pass --threshold 0.9, or distill it again"
            )

    def cascade_threshold(self) -> tuple[float | Literal["auto"], float]:
        """(threshold or "auto", target agreement) of a --student run, defaults filled in."""
        return (self.threshold if self.threshold is not None else "auto"), (self.target_agreement or 0.98)

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
        """Validate options from the CLI or a caller (None = the default); errors name their flags."""
        return build_options(cls, kwargs)
