"""The living feed `bosun dev` runs: each tick a new chunk of the invoice stream
(`sample_data.live_chunk`), its purchase orders into the ERP first (the ERP knows a PO
before its invoice arrives), its events into the inbox, then the sample bank's reports."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from assets.invoices.sample_data import live_chunk, load_erp
from assets.invoices.sample_settlements import simulate_settlements
from orchestration.core import clock
from orchestration.trigger.sample_events import ingest_chunk


@lru_cache(maxsize=4)
def _vendors(sample_dir: Path) -> list[dict]:
    return load_erp(sample_dir)[0]


def feed_chunk(resources, payload_registry, sample_dir: Path, chunk: int, per_tick: int, seed: int) -> dict:
    """Feed chunk `chunk` (numbers come from the caller, who keeps them from repeating)."""
    events, purchase_orders = live_chunk(_vendors(Path(sample_dir)), chunk, per_tick, seed, clock.now())
    resources["erp"].load_master_data([], purchase_orders)
    fed = ingest_chunk(resources["bosun_db"].inbox(), events, payload_registry, chunk)
    # The sample bank reports what it has settled by now, so the daily
    # `payments_settled_by_due_date` check has a feed to read.
    settled = simulate_settlements(resources["erp"], seed)
    return {**fed, "bank_reports": settled["reports"]}
