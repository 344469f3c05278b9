"""A small invoice world per test: sample ERP and events, and a way to run every batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest


@dataclass
class InvoiceWorld:
    home: Path
    sample: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def resources(self):
        return self.defs.resources

    def ingest_sample(self):
        from orchestration.definitions import payload_registry
        from orchestration.trigger.sample_events import read_events

        return self.resources["bosun_db"].inbox().ingest(read_events(self.sample / "invoices.jsonl"), payload_registry)

    def run_pending(self, defs: dg.Definitions | None = None):
        from assets.invoices import context_assets
        from assets.invoices.workflow import EVENT_TYPES, batch_policy, invoice_batches
        from orchestration.trigger.runner import run_pending_batches

        defs = defs or self.defs
        if not self.instance.get_latest_materialization_event(dg.AssetKey("vendors")):
            dg.materialize(context_assets, instance=self.instance, resources=defs.resources)
        return run_pending_batches(
            defs,
            "invoice_batch_job",
            invoice_batches,
            EVENT_TYPES,
            self.resources["bosun_db"].inbox(),
            self.instance,
            batch_policy,
            cursor=self.cursor(),
        )

    def cursor(self) -> int:
        keys = self.instance.get_dynamic_partitions("invoice_batches")
        return max((int(k.split("-")[1]) for k in keys), default=0)


def make_world(
    home: Path,
    instance: dg.DagsterInstance,
    n: int = 300,
    seed: int = 11,
    monkeypatch=None,
    resources: dict | None = None,
) -> InvoiceWorld:
    from assets.invoices import sample_data
    from assets.invoices.training import seed_erp
    from orchestration.definitions import build_definitions

    sample = home / "sample"
    sample_data.write_sample_data(sample, n_invoices=n, seed=seed)
    monkeypatch.setenv("BOSUN_SAMPLE_DIR", str(sample))
    defs = build_definitions(resources)
    seed_erp(defs.resources["erp"], sample)
    return InvoiceWorld(home, sample, defs, instance)


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, model_home, monkeypatch, tmp_path):
    """Embedded (SQLite everywhere) and production-like: Bosun's tables and the ERP in
    Postgres, Dagster's storage in Postgres through dagster-postgres."""
    overrides = None
    if request.param == "postgres":
        monkeypatch.setenv("BOSUN_DATABASE_URL", request.getfixturevalue("pg_url"))
        overrides = {"storage": {"postgres": {"postgres_url": request.getfixturevalue("dagster_pg_url")}}}
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster"), overrides=overrides) as instance:
        yield make_world(model_home, instance, monkeypatch=monkeypatch)


@pytest.fixture
def make_small_world(model_home, monkeypatch, tmp_path):
    """A function making an embedded (SQLite) world of `n` sample invoices with some
    resources replaced (an LLM pointed at the fake server, say)."""
    import contextlib

    with contextlib.ExitStack() as stack:

        def make(n: int = 120, resources: dict | None = None) -> InvoiceWorld:
            (tmp_path / "dagster").mkdir()
            instance = stack.enter_context(dg.instance_for_test(temp_dir=str(tmp_path / "dagster")))
            return make_world(model_home, instance, n=n, monkeypatch=monkeypatch, resources=resources)

        yield make


@pytest.fixture
def world_maker(model_home, monkeypatch):
    """make(instance, n, seed) -> an InvoiceWorld of n invoices on the embedded defaults."""
    return lambda instance, n, seed: make_world(model_home, instance, n=n, seed=seed, monkeypatch=monkeypatch)
