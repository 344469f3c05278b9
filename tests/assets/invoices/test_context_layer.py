"""The context layer under faults: sources that time out or fail, knowledge gaps,
conflicts, the token budget, and `bosun explain`."""

import json
import time

import dagster as dg

from assets.invoices.context import assemble_context
from assets.invoices.decisions import decide
from assets.invoices.erp import ERPResource
from assets.invoices.knowledge import LABELS_PATH
from assets.invoices.workflow import EVENT_TYPES
from orchestration.context.knowledge import current_index, load_labels, retrieval_quality
from orchestration.trigger.sample_events import read_events
from resources.context_sources import ContextSources
from resources.knowledge_base import PolicyDocuments, PolicyIndex

# Short timeouts so a hanging source costs the test a second, not minutes.
SOURCES = ContextSources(timeout_s=0.3, attempts=2, backoff_s=0.01)


class FlakyERP(ERPResource):
    """The real ERP, except that the vendor lookup hangs and the payments API is down."""

    def vendors_by_id(self, vendor_ids):
        time.sleep(3)
        return super().vendors_by_id(vendor_ids)

    def paid_invoices(self, invoice_ids):
        raise ConnectionError("payments API: HTTP 503 Service Unavailable")


def _decisions_by_key(audit) -> dict[str, dict]:
    import sqlalchemy as sa

    from orchestration.core.db import audit_log

    with audit.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log.c.subject, audit_log.c.record).where(audit_log.c.kind == "decision"))
        return {s: json.loads(r) for s, r in rows}


def _baseline(world, events) -> dict[str, float]:
    """Confidence with every source healthy, for the same events and the same ERP state."""
    r = world.resources
    erp = r["erp"]
    index = PolicyIndex(r["policy_documents"].load())
    contexts = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, index, SOURCES)
    return {d["key"]: d["confidence"] for d in decide(contexts, r["local_model"], r["llm"])}


def test_a_batch_completes_with_one_source_timing_out_and_another_down(world):
    from orchestration.definitions import build_definitions

    lines = read_events(world.sample / "invoices.jsonl")
    half = len(lines) // 2
    inbox = world.resources["bosun_db"].inbox()
    from orchestration.definitions import payload_registry

    healthy = build_definitions({"context_sources": SOURCES})
    inbox.ingest(lines[:half], payload_registry)
    first = inbox.events_between(1, 10**9, EVENT_TYPES)
    expected_first = _baseline(world, first)
    assert not world.run_pending(healthy).failed

    # The outage starts: the second half is decided while vendors hang and payments fail.
    inbox.ingest(lines[half:], payload_registry)
    second = inbox.events_between(1, 10**9, EVENT_TYPES)
    expected_second = _baseline(world, second)
    report = world.run_pending(build_definitions({"erp": FlakyERP(), "context_sources": SOURCES}))
    assert report.batches and not report.failed and not report.check_failures

    decisions = _decisions_by_key(world.resources["bosun_db"].audit())
    # Content twins and debounced updates are triaged out before any decision (issue 3);
    # compare the events that were decided, which are nearly all of them.
    expected_first = {k: v for k, v in expected_first.items() if k in decisions}
    expected_second = {k: v for k, v in expected_second.items() if k in decisions}
    assert len(expected_first) + len(expected_second) >= 0.9 * len(second)
    # Unaffected: decided before the outage, exactly as with healthy sources.
    assert {k: decisions[k]["confidence"] for k in expected_first} == expected_first
    for k in expected_first:
        assert decisions[k]["context_used"]["quality_factors"] == []
    # Affected: the stale vendor snapshot and the missing payments are on every decision.
    for k, healthy_confidence in expected_second.items():
        used = decisions[k]["context_used"]
        names = {f["name"] for f in used["quality_factors"]}
        assert {"stale_source:vendors", "missing_source:payments"} <= names
        assert used["sources"]["vendors"]["status"] == "stale" and used["sources"]["vendors"]["age_s"] is not None
        assert "SourceTimeout" in used["sources"]["vendors"]["error"]
        assert used["sources"]["payments"]["status"] == "missing"
        assert decisions[k]["confidence"] < healthy_confidence
    # Nothing is paid without its payment history: every affected decision went to a person.
    assert all(decisions[k]["route"] == "escalate" for k in expected_second)
    # Nothing lost: every event is decided or triaged, and every one is in a terminal state.
    counts = inbox.counts()
    assert counts["by_status"].get("received", 0) == 0
    assert counts["received"] >= len(expected_first) + len(expected_second)

    # The run's metadata says the same, in figures.
    mat = world.instance.get_latest_materialization_event(dg.AssetKey("invoice_context")).asset_materialization
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["source_vendors"] == "stale" and meta["source_payments"] == "missing"
    assert meta["quality_factors"]["missing_source:payments"] == len(expected_second)


def test_explain_shows_the_assembled_context_of_a_decision(world, capsys):
    from orchestration.cli import main

    world.ingest_sample()
    world.run_pending()
    event_id = json.loads((world.sample / "invoices.jsonl").read_text().splitlines()[3])["id"]
    assert main(["explain", event_id, "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    ctx = item["context"]
    a = ctx["assembly"]
    assert a["within_budget"] and 0 < a["tokens"] <= a["budget"] and len(a["hash"]) == 16
    assert {k["item"] for k in a["kept"]} >= {"invoice", "facts"}
    assert all(k["source"] and "status" in k and "age_s" in k for k in a["kept"] + a["dropped"])
    assert all(d["reason"] for d in a["dropped"])
    assert set(ctx["sources"]) == {"vendors", "purchase_orders", "payments", "knowledge"}
    assert "conflicts" in ctx and item["decision"]["confidence"] is not None
    assert main(["explain", event_id]) == 0
    text = capsys.readouterr().out
    assert "assembled" in text and "source vendors" in text


def _erp_world(tmp_path, n=120, seed=5):
    from assets.invoices import sample_data
    from assets.invoices.training import seed_erp

    sample = tmp_path / "sample"
    sample_data.write_sample_data(sample, n_invoices=n, seed=seed)
    erp = ERPResource(url=f"sqlite:///{tmp_path / 'erp.db'}")
    seed_erp(erp, sample)
    return sample, erp


def _events(sample, n):
    from orchestration.trigger.envelope import EventEnvelope
    from orchestration.trigger.inbox import InboxEvent

    raws = read_events(sample / "invoices.jsonl")[:n]
    return [
        InboxEvent(
            seq=i + 1,
            key=f"{r['source']}:{r['id']}",
            envelope=EventEnvelope.model_validate(r),
            status="received",
            attempts=0,
        )
        for i, r in enumerate(raws)
    ]


def test_conflicts_between_sources_are_resolved_by_rule_and_an_unresolved_one_lowers_confidence(bosun_home, tmp_path):
    import sqlalchemy as sa

    from assets.invoices.erp import vendors as vendor_table

    sample, erp = _erp_world(tmp_path)
    events = _events(sample, 40)
    snapshot_vendors, snapshot_pos = erp.vendors_frame(), erp.purchase_orders_frame()
    vendor_id = events[0].envelope.payload["vendor_id"]
    with erp.engine.begin() as conn:  # the ERP changed after the snapshot was taken
        conn.execute(sa.update(vendor_table).where(vendor_table.c.vendor_id == vendor_id).values(risk_tier="high"))
    events[1].envelope.payload["amount"] = str(float(events[1].envelope.payload["amount"]) + 100)  # header != lines
    index = PolicyIndex(PolicyDocuments(directory=str(sample / "policies")).load())
    records = {r["key"]: r for r in assemble_context(events, snapshot_vendors, snapshot_pos, erp, index, SOURCES)}

    changed = records[events[0].key]
    [c] = [c for c in changed["conflicts"] if c["field"] == "vendor.risk_tier"]
    assert c["resolved"] and c["rule"] == "recency" and c["chosen_source"] == "erp.vendors (live)"
    assert changed["facts"]["risk_tier"] == "high"  # the decision reads the resolved value
    assert not any(f["name"].startswith("unresolved") for f in changed["quality_factors"])

    odd = records[events[1].key]
    [c] = [c for c in odd["conflicts"] if c["field"] == "invoice.amount"]
    assert not c["resolved"] and c["rule"] == "must_agree"
    assert "unresolved_conflict:invoice.amount" in {f["name"] for f in odd["quality_factors"]}


def test_a_knowledge_gap_is_a_factor_and_counted(bosun_home, tmp_path):
    sample, erp = _erp_world(tmp_path)
    (sample / "policies" / "approval-policy.md").unlink()  # nobody wrote down when to approve
    events = _events(sample, 20)
    index = PolicyIndex(PolicyDocuments(directory=str(sample / "policies")).load())
    records = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, index, SOURCES)
    assert all("approval" in r["knowledge"]["gaps"] for r in records)
    assert all("knowledge_gap" in {f["name"] for f in r["quality_factors"]} for r in records)
    from assets.invoices.context import context_metadata
    from orchestration.context.knowledge import retrieval_cache

    meta = context_metadata(records, index, retrieval_cache.stats())
    assert meta["knowledge_gaps"] >= len(records)


def test_policy_index_reports_retrieval_quality_and_rebuilds_when_documents_change(bosun_home, tmp_path):
    sample, _ = _erp_world(tmp_path, n=20)
    docs = PolicyDocuments(directory=str(sample / "policies"))
    from assets.invoices.context import policy_index
    from resources.embeddings import Embeddings

    result = dg.materialize([policy_index], resources={"policy_documents": docs, "policy_embeddings": Embeddings()})
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["recall_at_5"].value >= 0.9
    index = result.output_for_node("policy_index")
    assert current_index(index, docs) is index  # unchanged documents: the materialized index
    path = sample / "policies" / "payment-runs.md"
    path.write_text(path.read_text() + "\n## Holidays\n\nNo payment runs on public holidays.\n")
    rebuilt = current_index(index, docs)
    assert rebuilt.version != index.version
    changed = {p.doc_version for p in rebuilt.passages if p.doc == "payment-runs.md"}
    assert changed == {rebuilt.document_versions["payment-runs.md"]} != {index.document_versions["payment-runs.md"]}
    # The check can fail: without half the documents recall@5 drops below the threshold.
    partial = PolicyIndex({k: v for k, v in docs.load().items() if k < "memo"})
    assert retrieval_quality(partial, load_labels(LABELS_PATH))["recall_at_5"] < 0.9


PAYMENT_CALLS: list = []  # module-level: a resource is a frozen pydantic model


class PaymentsAlwaysDown(ERPResource):
    """Counts how often the payments API is hammered while it is down."""

    def paid_invoices(self, invoice_ids):
        PAYMENT_CALLS.append(len(invoice_ids))
        raise ConnectionError("payments API: HTTP 503")

    def vendors_by_id(self, vendor_ids):
        raise TimeoutError("vendor service: read timed out")


def test_the_breaker_stops_calling_a_failing_source_across_batches_and_staleness_follows_the_policy(
    bosun_home, tmp_path
):
    from datetime import datetime, timedelta, timezone

    sample, erp = _erp_world(tmp_path)
    down = PaymentsAlwaysDown(url=erp.url)
    PAYMENT_CALLS.clear()
    sources = ContextSources(timeout_s=1, attempts=1, backoff_s=0.01, breaker_threshold=2, breaker_cooldown_s=600)
    events = _events(sample, 10)
    index = PolicyIndex(PolicyDocuments(directory=str(sample / "policies")).load())
    taken = datetime.now(timezone.utc) - timedelta(hours=30)  # the snapshot is past the 26 h warn window
    batches = [
        assemble_context(
            events,
            erp.vendors_frame(),
            erp.purchase_orders_frame(),
            down,
            index,
            sources,
            snapshot_times={"vendors": taken},
        )
        for _ in range(3)
    ]
    assert len(PAYMENT_CALLS) == 2  # the third batch did not call it: the circuit is open
    third = batches[2][0]["sources"]["payments"]
    assert third["breaker"] == "open" and "circuit open" in third["error"] and third["attempts"] == 0
    vendors = batches[0][0]["sources"]["vendors"]
    assert vendors["status"] == "stale" and vendors["freshness"] == "warn" and 30 * 3600 - 60 < vendors["age_s"]
    [stale] = [f for f in batches[0][0]["quality_factors"] if f["name"] == "stale_source:vendors"]
    assert stale["penalty"] == 0.15 and "freshness policy: warn" in stale["detail"]
