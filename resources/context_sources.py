"""How context sources are read: timeouts, retries, circuit breaker, snapshot fallback.

One resource for every source a workflow reads its context from, so that the settings
are configured (and overridden in tests) in one place; the mechanics live in
`orchestration.context.sources`. The breaker's state is kept in Bosun's database, so it is shared
by every run and process.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import dagster as dg

from orchestration.action.circuit_breaker import CircuitBreaker
from orchestration.context.freshness import FreshnessWindow
from orchestration.context.sources import Snapshot, SourceReading, SourceSettings, read_source
from orchestration.core import settings
from resources.env import resolved


class ContextSources(dg.ConfigurableResource):
    """Per-call timeout, retries with exponential backoff, and a circuit breaker per source."""

    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.2
    breaker_threshold: int = 3  # consecutive failed reads before the circuit opens
    breaker_cooldown_s: float = 300.0
    timeouts: dict[str, float] = {}  # per-source overrides of timeout_s
    database_url: Optional[str] = None  # breaker state; unset means Bosun's database

    def breaker(self) -> CircuitBreaker:
        url = resolved(self.database_url)
        url = settings.normalise_url(url) if url else settings.database_url()
        return CircuitBreaker(url, self.breaker_threshold, self.breaker_cooldown_s)

    def read(
        self,
        name: str,
        fetch: Callable[[], Any],
        snapshot: Snapshot | None = None,
        window: FreshnessWindow | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> SourceReading:
        cfg = SourceSettings(
            timeout_s=self.timeouts.get(name, self.timeout_s), attempts=self.attempts, backoff_s=self.backoff_s
        )
        return read_source(name, fetch, cfg, breaker or self.breaker(), snapshot, window)
