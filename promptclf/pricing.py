"""Dollar cost of token usage, from a price table the user can override.

Keys are ``provider/model`` (``local/*`` style wildcards allowed). A server reached
with ``--base-url`` is priced as ``openai/<model>`` if listed, else free: self-hosted
compute is accounted for by the report's hourly price, not per token.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .providers.base import Usage

_DEFAULT = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float
    known: bool = True

    def cost(self, usage: Usage) -> float:
        return (usage.prompt_tokens * self.input_per_1m + usage.completion_tokens * self.output_per_1m) / 1e6


def load_prices(override: str | Path | None = None) -> dict[str, dict[str, float]]:
    table = json.loads(_DEFAULT.read_text())
    if override:
        p = Path(override)
        try:
            table.update(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"--prices {override}: cannot read a JSON price table ({exc})") from exc
    return {k: v for k, v in table.items() if not k.startswith("_")}


def price_for(provider: str, model: str, table: dict[str, dict[str, float]]) -> Price:
    key = f"{provider}/{model}"
    for pattern, p in table.items():
        if pattern == key or fnmatch.fnmatchcase(key, pattern):
            return Price(float(p["input"]), float(p["output"]))
    return Price(0.0, 0.0, known=False)
