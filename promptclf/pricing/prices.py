"""Dollar cost of token usage, from a price table the user can override.

Keys are ``provider/model`` (``local/*`` style wildcards allowed). A server reached
with ``--base-url`` is priced as ``openai/<model>`` if listed, else free: self-hosted
compute is accounted for by the report's hourly price, not per token.

Each entry has ``input`` and ``output`` (USD per 1M tokens) and optionally:

* ``cached_input``: the rate for prompt tokens served from the provider's prompt cache
  (``Usage.cached_prompt_tokens``); absent = no discount;
* ``batch_input``, ``batch_output`` (and ``batch_cached_input``): the rates of the
  provider's batch API (``--batch-api``); absent = the synchronous rates (no discount);
* ``cache_min_tokens``, ``cache_increment``: the provider's caching rule (the shortest
  prefix it caches and the step it caches in), used by ``--dry-run`` to estimate the saving.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..providers.base import Usage

_DEFAULT = Path(__file__).with_name("prices.json")

# OpenAI caches a prompt prefix of at least 1,024 tokens, in steps of 128 tokens.
CACHE_MIN_TOKENS = 1024
CACHE_INCREMENT = 128


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float
    known: bool = True
    cached_input_per_1m: float | None = None  # None: cached tokens cost the input rate
    batch_input_per_1m: float | None = None  # None: the batch API costs the synchronous rates
    batch_output_per_1m: float | None = None
    batch_cached_input_per_1m: float | None = None
    cache_min_tokens: int = CACHE_MIN_TOKENS
    cache_increment: int = CACHE_INCREMENT

    @property
    def free(self) -> bool:
        """Known and zero at every rate (the local model): there is no spend to show."""
        return self.known and self.input_per_1m == 0 and self.output_per_1m == 0

    def spend_text(self, spent_usd: float) -> str:
        """What a progress bar says about money: the spend, or why there is none to show."""
        if not self.known:
            return "cost unknown: add --prices"
        return "" if self.free else f"spent ${spent_usd:.4f}"

    @property
    def batch_known(self) -> bool:
        """True when the table has this model's batch-API rates (else batch = synchronous prices)."""
        return self.batch_input_per_1m is not None

    def rates(self, batch: bool = False) -> tuple[float, float, float]:
        """(input, cached input, output) per 1M tokens, synchronous or through the batch API."""
        if batch and self.batch_input_per_1m is not None:
            inp = self.batch_input_per_1m
            out = self.batch_output_per_1m if self.batch_output_per_1m is not None else self.output_per_1m
            cached = self.batch_cached_input_per_1m if self.batch_cached_input_per_1m is not None else inp
            return inp, min(cached, inp), out
        cached = self.cached_input_per_1m if self.cached_input_per_1m is not None else self.input_per_1m
        return self.input_per_1m, min(cached, self.input_per_1m), self.output_per_1m

    def cost(self, usage: Usage, batch: bool = False) -> float:
        """Dollars for ``usage``; cached prompt tokens at the cached rate, ``batch`` at batch rates."""
        inp, cached_rate, out = self.rates(batch)
        cached = min(max(0, usage.cached_prompt_tokens), usage.prompt_tokens)
        return ((usage.prompt_tokens - cached) * inp + cached * cached_rate + usage.completion_tokens * out) / 1e6

    def cacheable_tokens(self, prefix_tokens: int) -> int:
        """Tokens of a repeated ``prefix_tokens``-long prefix the provider would serve from its cache."""
        if prefix_tokens < self.cache_min_tokens:
            return 0
        step = max(1, self.cache_increment)
        return prefix_tokens // step * step


def load_prices(override: str | Path | None = None) -> dict[str, dict[str, float]]:
    table = json.loads(_DEFAULT.read_text())
    if override:
        p = Path(override)
        try:
            table.update(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"--prices {override}: cannot read a JSON price table ({exc})") from exc
    return {k: v for k, v in table.items() if not k.startswith("_")}


def _opt(p: dict[str, float], key: str) -> float | None:
    return float(p[key]) if p.get(key) is not None else None


def price_for(provider: str, model: str, table: dict[str, dict[str, float]]) -> Price:
    key = f"{provider}/{model}"
    for pattern, p in table.items():
        if pattern == key or fnmatch.fnmatchcase(key, pattern):
            return Price(
                float(p["input"]),
                float(p["output"]),
                cached_input_per_1m=_opt(p, "cached_input"),
                batch_input_per_1m=_opt(p, "batch_input"),
                batch_output_per_1m=_opt(p, "batch_output"),
                batch_cached_input_per_1m=_opt(p, "batch_cached_input"),
                cache_min_tokens=int(p.get("cache_min_tokens", CACHE_MIN_TOKENS)),
                cache_increment=int(p.get("cache_increment", CACHE_INCREMENT)),
            )
    return Price(0.0, 0.0, known=False)
