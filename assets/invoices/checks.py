"""Verification of the invoice workflow: asset checks on each batch's outcome."""


import warnings

import dagster as dg

from orchestration.batching import BatchRange
from orchestration.inbox import TERMINAL_STATES
from resources.database import BosunDatabase
from resources.erp import ERPResource

from assets.invoices.actions import invoice_actions
from assets.invoices.workflow import EVENT_TYPES, PO_TOLERANCE, invoice_batches

# Partition-aware checks are "preview" in Dagster 1.13; a batch check has to know its
# batch, so we use them knowingly and keep the warning out of every CLI call.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)


@dg.asset_check(asset=invoice_actions, partitions_def=invoice_batches, blocking=True,
                description="Nothing lost: every event of the batch is done, escalated, rejected or dead-lettered.")
def every_event_reached_a_terminal_state(context: dg.AssetCheckExecutionContext,
                                          bosun_db: BosunDatabase) -> dg.AssetCheckResult:
    batch = BatchRange.parse(context.partition_key)
    states = bosun_db.inbox().states_between(batch.first, batch.last, EVENT_TYPES)
    stuck = {s: n for s, n in states.items() if s not in TERMINAL_STATES}
    return dg.AssetCheckResult(passed=not stuck, metadata={
        "events": sum(states.values()), **{f"state_{s}": n for s, n in sorted(states.items())},
        "not_terminal": sum(stuck.values())})


@dg.asset_check(asset=invoice_actions, partitions_def=invoice_batches, blocking=True,
                description="No invoice has more than one live payment, across all batches.")
def no_invoice_paid_twice(erp: ERPResource) -> dg.AssetCheckResult:
    twice = erp.invoices_paid_twice()
    return dg.AssetCheckResult(passed=not twice, metadata={
        "invoices_paid_twice": len(twice), "examples": dg.MetadataValue.json(twice[:10])})


@dg.asset_check(asset=invoice_actions, partitions_def=invoice_batches, blocking=True,
                description="Live payments on each purchase order stay within its amount plus tolerance.")
def no_payment_exceeds_po(erp: ERPResource) -> dg.AssetCheckResult:
    over = erp.payments_over_po(PO_TOLERANCE)
    return dg.AssetCheckResult(passed=not over, metadata={
        "purchase_orders_exceeded": len(over), "tolerance": float(PO_TOLERANCE),
        "examples": dg.MetadataValue.json(over[:10])})


invoice_checks = [every_event_reached_a_terminal_state, no_invoice_paid_twice, no_payment_exceeds_po]
