"""The invoice workflow through all five layers, in-process on a real SQLite instance."""

from collections import Counter

import sqlalchemy as sa

from assets.invoices import sample_data
from assets.invoices.erp import ERPResource, ledger_entries, payments
from assets.invoices.workflow import EVENT_TYPES
from orchestration.trigger.inbox import TERMINAL_STATES
from orchestration.trigger.runner import outcome_accuracy


def test_every_event_ends_in_one_terminal_state_and_checks_pass(world):
    summary = world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    counts = world.resources["bosun_db"].inbox().counts()
    assert set(counts["by_status"]) <= set(TERMINAL_STATES)
    assert counts["received"] == summary.accepted  # nothing lost
    assert counts["by_status"]["done"] > 0 and counts["by_status"].get("escalated", 0) > 0
    assert world.resources["bosun_db"].audit().verify().ok


def test_decisions_match_ground_truth(world):
    world.ingest_sample()
    world.run_pending()
    labels = {event_id: truth["label"] for event_id, truth in sample_data.load_labels(world.sample).items()}
    acc = outcome_accuracy(world.resources["bosun_db"].inbox(), EVENT_TYPES, labels)
    assert acc["decided"] > 200
    assert acc["accuracy"] >= 0.95


def test_hard_guardrails_hold_whatever_the_model_says(world):
    world.ingest_sample()
    world.run_pending()
    labels = sample_data.load_labels(world.sample)
    erp = world.resources["erp"]
    paid_invoices = {p["invoice_id"] for p in erp.live_payments()}
    bad = {
        "unknown_vendor",
        "inactive_vendor",
        "duplicate_invoice",
        "amount_over_po",
        "currency_mismatch",
        "po_closed",
        "prompt_injection",
    }
    events = {e["id"]: e for e in (sample_data.generate(300, 11).events)}
    wrongly_paid = [
        eid
        for eid, lab in labels.items()
        if lab["reason"] in bad
        and lab["reason"] != "duplicate_invoice"
        and events[eid]["payload"]["invoice_id"] in paid_invoices
    ]
    assert wrongly_paid == []


def test_ingesting_the_same_file_twice_acts_once(world):
    first = world.ingest_sample()
    world.run_pending()
    second = world.ingest_sample()
    assert second.accepted == 0 and second.duplicates == first.accepted + first.duplicates
    report = world.run_pending()
    assert report.batches == []
    erp_engine = world.resources["erp"].engine
    with erp_engine.connect() as conn:
        paid = Counter(r.invoice_id for r in conn.execute(sa.select(payments.c.invoice_id)))
        posted = Counter(r.invoice_id for r in conn.execute(sa.select(ledger_entries.c.invoice_id)))
    assert paid and max(paid.values()) == 1 and max(posted.values()) == 1
    audit = world.resources["bosun_db"].audit()
    decisions = [r for r in _audit_rows(audit) if r[0] == "decision"]
    by_status = world.resources["bosun_db"].inbox().counts()["by_status"]
    triaged_out = sum(by_status.get(s, 0) for s in ("duplicate", "debounced", "stale"))
    assert len(decisions) == len({s for _, s in decisions}) == first.accepted - triaged_out


def test_rerunning_a_batch_is_idempotent(world):
    world.ingest_sample()
    report = world.run_pending()
    before = len(world.resources["erp"].live_payments())
    job = world.defs.resolve_job_def("invoice_batch_job")
    result = job.execute_in_process(partition_key=report.batches[0], instance=world.instance)
    assert result.success
    assert len(world.resources["erp"].live_payments()) == before
    assert world.resources["bosun_db"].audit().verify().ok


class PaymentsDown(ERPResource):
    """The ERP's payment API fails after the ledger entry was posted."""

    def schedule_payments(self, items):
        raise ConnectionError("payment service unavailable (HTTP 503)")


def test_failure_in_the_second_step_is_compensated_and_dead_lettered(world):
    from orchestration.definitions import build_definitions

    world.ingest_sample()
    report = world.run_pending(build_definitions({"erp": PaymentsDown()}))
    # The dead-letter backlog breaches its limit: a non-blocking check says so, the run succeeds.
    assert not report.failed
    assert {c.split(": ")[1] for c in report.check_failures} == {"dead_letters_within_limits"}
    erp = world.resources["erp"]
    assert erp.live_ledger_entries() == [] and erp.live_payments() == []
    with erp.engine.connect() as conn:
        reversed_ = conn.execute(
            sa.select(sa.func.count()).select_from(ledger_entries).where(ledger_entries.c.status == "reversed")
        ).scalar_one()
    inbox = world.resources["bosun_db"].inbox()
    dead = [r for r in inbox.rejected(1000) if r["status"] == "dead_lettered"]
    assert reversed_ == len(dead) > 0
    assert all(
        "schedule_payment failed after 3 attempt(s)" in r["reason"] and "compensated: post_ledger_entry" in r["reason"]
        for r in dead
    )
    kinds = [k for k, _ in _audit_rows(world.resources["bosun_db"].audit())]
    assert kinds.count("compensation") == len(dead)
    # The check names the dead letters (the first ten), not only their count.
    from assets.invoices.workflow import EVENT_TYPES, dead_letter_policy
    from orchestration.verification.outcome_checks import dead_letters_within_limits

    check = dead_letters_within_limits(world.resources["bosun_db"], EVENT_TYPES, dead_letter_policy)
    named = check.metadata["first_open_dead_letters"].value
    assert len(named) == min(10, len(dead)) and {d["event_key"] for d in named} <= {r["idempotency_key"] for r in dead}
    assert all("schedule_payment failed" in d["error"] for d in named)


def _audit_rows(audit):
    from orchestration.core.db import audit_log

    with audit.engine.connect() as conn:
        return [(k, s) for k, s in conn.execute(sa.select(audit_log.c.kind, audit_log.c.subject))]


def test_the_audit_tells_why_a_payment_was_made(world):
    world.ingest_sample()
    world.run_pending()
    paid = world.resources["erp"].live_payments()[0]
    event_key = paid["idempotency_key"].split(":", 1)[1]
    chain = world.resources["bosun_db"].audit().records_for(event_key)
    assert [r["kind"] for r in chain] == ["decision", "action", "action", "action", "outcome"]
    decision = chain[0]["record"]
    assert decision["event"]["id"] and decision["event"]["payload_sha256"]
    assert decision["context_used"]["po_number"] == paid["po_number"]
    assert decision["model"] == "local" and decision["model_version"].startswith("local-")
    assert decision["decision"] == "approve" and decision["confidence"] >= 0.75
    assert [r["record"]["step"] for r in chain[1:4]] == ["post_ledger_entry", "schedule_payment", "notify_vendor"]
    assert chain[4]["record"]["status"] == "done"
    notice = f"notify_vendor:{event_key}"  # and the vendor was told, once
    assert world.resources["outbox"].live_notification_keys([notice]) == {notice}
