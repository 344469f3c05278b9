"""Verification of the invoice workflow: asset checks on each batch's outcome."""

import dagster as dg

from assets.invoices.actions import PREVIEW_TAG, invoice_actions
from assets.invoices.batch_reconciliation import reconcile_batch
from assets.invoices.data_quality import expectation_checks
from assets.invoices.decisions import invoice_guardrail_checks
from assets.invoices.erp import ERPResource
from assets.invoices.workflow import EVENT_TYPES, PO_TOLERANCE, dead_letter_policy, invoice_batches
from orchestration import outcome_reconciliation
from orchestration.audit import check_results_entry
from orchestration.batching import BatchRange
from orchestration.inbox import TERMINAL_STATES
from resources.database import BosunDatabase
from resources.outbox import NotificationOutbox

_SPECS = {
    "every_event_reached_a_terminal_state": "Nothing lost: every event of the batch is done, escalated, rejected or dead-lettered.",
    "decisions_reconcile_with_saga_log_and_erp": "Every paid event has a done saga and a live ledger entry, payment and vendor notice of its amount "
    "and currency; every other event has no live effect (or a compensated/escalated saga with a reason); "
    "nothing in the ERP or the outbox for the batch's invoices lacks the saga step that wrote it.",
    "no_invoice_paid_twice": "No invoice has more than one live payment, across all batches.",
    "no_payment_exceeds_po": "Live payments on each purchase order stay within its amount plus tolerance.",
    "dead_letters_within_limits": "Open dead letters stay under the workflow's count and age limits.",
}
# A backlog of dead letters is for an operator to see, not a reason to stop the next batch.
_NON_BLOCKING = {"dead_letters_within_limits"}


# One step for the batch's outcome checks: each step of a run costs event-log writes, and
# these are a few cheap queries (shared/notes/performance.md).
@dg.multi_asset_check(
    name="invoice_outcome_checks",
    specs=[
        dg.AssetCheckSpec(
            name,
            asset=invoice_actions,
            partitions_def=invoice_batches,
            blocking=name not in _NON_BLOCKING,
            description=text,
        )
        for name, text in _SPECS.items()
    ],
)
def invoice_outcome_checks(
    context: dg.AssetCheckExecutionContext, bosun_db: BosunDatabase, erp: ERPResource, outbox: NotificationOutbox
):
    preview = context.run.tags.get(PREVIEW_TAG) == "true"
    if preview:
        # A preview acts on nothing: the events stay received for the real run.
        results = [
            dg.AssetCheckResult(asset_key=invoice_actions.key, check_name=name, passed=True, metadata={"preview": True})
            for name in ("every_event_reached_a_terminal_state", "decisions_reconcile_with_saga_log_and_erp")
        ]
    else:
        batch = BatchRange.parse(context.partition_key)
        results = [
            every_event_reached_a_terminal_state(batch, bosun_db),
            decisions_reconcile_with_saga_log_and_erp(batch, bosun_db, erp, outbox),
        ]
    results += [no_invoice_paid_twice(erp), no_payment_exceeds_po(erp), dead_letters_within_limits(bosun_db)]
    if not preview:  # the batch's check results close each of its events' audit chains
        bosun_db.audit().append([check_results_entry(context.partition_key, context.run.run_id, results)])
    yield from results


def every_event_reached_a_terminal_state(batch: BatchRange, bosun_db: BosunDatabase) -> dg.AssetCheckResult:
    states = bosun_db.inbox().batch_states(batch.key, EVENT_TYPES)
    stuck = {s: n for s, n in states.items() if s not in TERMINAL_STATES}
    return dg.AssetCheckResult(
        asset_key=invoice_actions.key,
        check_name="every_event_reached_a_terminal_state",
        passed=not stuck,
        metadata={
            "events": sum(states.values()),
            **{f"state_{s}": n for s, n in sorted(states.items())},
            "not_terminal": sum(stuck.values()),
        },
    )


def decisions_reconcile_with_saga_log_and_erp(
    batch: BatchRange, bosun_db: BosunDatabase, erp: ERPResource, outbox: NotificationOutbox
) -> dg.AssetCheckResult:
    rec = reconcile_batch(batch, bosun_db, erp, outbox)
    meta = outcome_reconciliation.metadata(rec)
    return dg.AssetCheckResult(
        asset_key=invoice_actions.key,
        check_name="decisions_reconcile_with_saga_log_and_erp",
        passed=rec.ok,
        description=None if rec.ok else f"{len(rec.discrepancies)} discrepancies: " + ", ".join(rec.events_named()[:5]),
        metadata={
            "events": meta["events"],
            "live_effects": meta["live_effects"],
            "discrepancies": meta["discrepancies"],
            "saga_status": dg.MetadataValue.json(meta["saga_status"]),
            "discrepancies_by_kind": dg.MetadataValue.json(meta["discrepancies_by_kind"]),
            "events_with_discrepancies": dg.MetadataValue.json(meta["events_with_discrepancies"]),
            "examples": dg.MetadataValue.json(meta["examples"]),
        },
    )


def no_invoice_paid_twice(erp: ERPResource) -> dg.AssetCheckResult:
    twice = erp.invoices_paid_twice()
    return dg.AssetCheckResult(
        asset_key=invoice_actions.key,
        check_name="no_invoice_paid_twice",
        passed=not twice,
        metadata={"invoices_paid_twice": len(twice), "examples": dg.MetadataValue.json(twice[:10])},
    )


def no_payment_exceeds_po(erp: ERPResource) -> dg.AssetCheckResult:
    over = erp.payments_over_po(PO_TOLERANCE)
    return dg.AssetCheckResult(
        asset_key=invoice_actions.key,
        check_name="no_payment_exceeds_po",
        passed=not over,
        metadata={
            "purchase_orders_exceeded": len(over),
            "tolerance": float(PO_TOLERANCE),
            "examples": dg.MetadataValue.json(over[:10]),
        },
    )


def dead_letters_within_limits(bosun_db: BosunDatabase) -> dg.AssetCheckResult:
    stats = bosun_db.dead_letters().stats(EVENT_TYPES)
    breaches = dead_letter_policy.breaches(stats)
    # The first open ones by name, so the UI says which events wait for a person, not only how many.
    first_open = [
        {
            "dead_letter_id": d["id"],
            "event_key": d["event_key"],
            "type": d["type"],
            "attempts": d["attempts"],
            "since": d["first_failed_at"].isoformat(),
            "error": (d["error"] or "")[:200],
        }
        for d in bosun_db.dead_letters().list(status="open", types=EVENT_TYPES, limit=10)
    ]
    return dg.AssetCheckResult(
        asset_key=invoice_actions.key,
        check_name="dead_letters_within_limits",
        passed=not breaches,
        description="; ".join(breaches) or None,
        metadata={
            "open_dead_letters": stats.open,
            "oldest_open_age_s": stats.oldest_open_age_s or 0.0,
            "max_open": dead_letter_policy.max_open,
            "max_oldest_age_s": dead_letter_policy.max_oldest_age_s,
            "first_open_dead_letters": dg.MetadataValue.json(first_open),
            "to_inspect": "bosun dlq list, then bosun dlq retry ID or bosun dlq drop ID --reason TEXT",
        },
    )


invoice_checks = [invoice_guardrail_checks, invoice_outcome_checks, *expectation_checks]
