"""Verification of the invoice workflow: the engine's outcome checks on each batch, with the
invoice knowledge they need (its targets' rows, double payments, the PO tolerance)."""

import dagster as dg

from assets.invoices.actions import PREVIEW_TAG, invoice_actions
from assets.invoices.batch_reconciliation import reconcile_batch
from assets.invoices.data_quality import expectation_checks
from assets.invoices.decisions import invoice_guardrail_checks
from assets.invoices.erp import ERPResource
from assets.invoices.workflow import EVENT_TYPES, PO_TOLERANCE, dead_letter_policy, invoice_batches
from orchestration.verification.outcome_checks import (
    ActedOnTwice,
    OutcomeCheck,
    Reconcile,
    Verdict,
    build_outcome_checks,
)


def no_payment_exceeds_po(erp: ERPResource) -> Verdict:
    over = erp.payments_over_po(PO_TOLERANCE)
    return Verdict(
        passed=not over,
        metadata={
            "purchase_orders_exceeded": len(over),
            "tolerance": float(PO_TOLERANCE),
            "examples": dg.MetadataValue.json(over[:10]),
        },
    )


invoice_outcome_checks = build_outcome_checks(
    "invoice_outcome_checks",
    asset=invoice_actions,
    partitions_def=invoice_batches,
    event_types=EVENT_TYPES,
    dead_letter_policy=dead_letter_policy,
    reconcile=Reconcile(
        "decisions_reconcile_with_saga_log_and_erp",
        "Every paid event has a done saga and a live ledger entry, payment and vendor notice of its amount "
        "and currency; every other event has no live effect (or a compensated/escalated saga with a reason); "
        "nothing in the ERP or the outbox for the batch's invoices lacks the saga step that wrote it.",
        lambda batch, r: reconcile_batch(batch, r["bosun_db"], r["erp"], r["outbox"]),
        resource_keys={"erp", "outbox"},
    ),
    acted_on_twice=ActedOnTwice(
        "no_invoice_paid_twice",
        "No invoice has more than one live payment, across all batches.",
        lambda r: r["erp"].invoices_paid_twice(),
        count_name="invoices_paid_twice",
        resource_keys={"erp"},
    ),
    extra_checks=[
        OutcomeCheck(
            "no_payment_exceeds_po",
            "Live payments on each purchase order stay within its amount plus tolerance.",
            lambda _batch, r: no_payment_exceeds_po(r["erp"]),
            resource_keys={"erp"},
        )
    ],
    preview_tag=PREVIEW_TAG,
)

invoice_checks = [invoice_guardrail_checks, invoice_outcome_checks, *expectation_checks]
