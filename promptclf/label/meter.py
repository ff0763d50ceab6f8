"""What a labeling run counts while it runs: usage, cost and latency (:class:`Stats`), and its progress bar.

A :class:`Meter` is handed down to the runners inside the run context
(:class:`promptclf.label.context.RunContext`); they report every response to it
(:meth:`Meter.account`), every retry, failure and re-ask (:meth:`Meter.add`), and every
finished row (:meth:`Meter.tick`). Worker threads share it, so every count is taken under one
lock. The progress bar is the only thing in the library that writes to the terminal itself.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..pricing.prices import Price
from ..providers.base import Usage
from ..runs import RunUsage

if TYPE_CHECKING:
    from tqdm import tqdm

Counter = Literal["failed_requests", "reasks", "transport_retries"]


@dataclass
class Stats:
    """What a run sent, received and spent. ``cost_usd`` is money spent now; ``list_cost_usd``
    also prices cached responses, which is what the job costs per item at list price."""

    requests: int = 0
    cached_requests: int = 0
    failed_requests: int = 0
    reasks: int = 0
    transport_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # part of prompt_tokens served from the provider's prompt cache
    batch_requests: int = 0  # responses fetched now through the provider's batch API (--batch-api)
    cost_usd: float = 0.0
    list_cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)  # every response's own latency, cached ones included

    def usage(self) -> RunUsage:
        """The counts as the run record keeps them."""
        return RunUsage(**{k: v for k, v in vars(self).items() if k in RunUsage.model_fields})


class Meter:
    """Accounting and progress of one labeling run.

    ``price``: the model's price; ``batch_prices``: the run goes through the provider's batch
    API, so its responses, those from the store included, are listed at the batch price.
    ``progress``: show a progress bar on stderr (rows, rate, ETA, spend).
    """

    def __init__(self, price: Price, batch_prices: bool = False, progress: bool = True) -> None:
        self.price = price
        self.batch_prices = batch_prices
        self.progress = progress
        self.stats = Stats()
        self._lock = threading.Lock()
        self._bar: tqdm[Any] | None = None

    # -- accounting ---------------------------------------------------------------------------
    def account(self, usage: Usage, latency: float, cached: bool, batch: bool = False) -> float:
        """Count one response (fetched now, or from the store with ``cached``; ``batch``: through
        the provider's batch API, at its batch price); returns its list cost."""
        cost = self.price.cost(usage, batch=batch or (cached and self.batch_prices))
        s = self.stats
        with self._lock:
            s.requests += 1
            s.prompt_tokens += usage.prompt_tokens
            s.completion_tokens += usage.completion_tokens
            s.cached_prompt_tokens += usage.cached_prompt_tokens
            if batch and not cached:
                s.batch_requests += 1
            s.list_cost_usd += cost
            # A cached response keeps the latency it had when it was fetched, so the speed
            # of a resumed or cached rerun is still the provider's, not the cache's.
            s.latencies.append(latency)
            if cached:
                s.cached_requests += 1
            else:
                s.cost_usd += cost
        return cost

    def add(self, counter: Counter, n: int = 1) -> None:
        """Count ``n`` failed requests, re-asked items or transport retries."""
        with self._lock:
            if counter == "failed_requests":
                self.stats.failed_requests += n
            elif counter == "reasks":
                self.stats.reasks += n
            else:
                self.stats.transport_retries += n

    # -- progress -----------------------------------------------------------------------------
    def start(self, total: int) -> None:
        """Open the progress bar for ``total`` rows (nothing without ``progress``)."""
        if self.progress and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, unit="row", file=sys.stderr, dynamic_ncols=True, mininterval=0.5, desc="labeling"
            )

    def tick(self, n: int) -> None:
        """Advance the progress bar by ``n`` finished rows."""
        if self._bar is not None and n:
            self._bar.update(n)
            # Spend only where a price is known, and none for a free (local) model.
            self._bar.set_postfix_str(self.price.spend_text(self.stats.cost_usd), refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def counter(self, total: int, unit: str, desc: str) -> tqdm[Any] | None:
        """A second bar under the rows' bar (a provider batch's own request counts), or None."""
        if self._bar is None:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, position=1, leave=False)
