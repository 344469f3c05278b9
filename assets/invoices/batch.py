"""The invoice batch: context, decisions and payments, built by the engine
(orchestration/core/batch_assets.py) from the invoice's three steps, with its checks."""

import dagster as dg

from assets.invoices.actions import ACTIONS
from assets.invoices.batch_reconciliation import reconcile_batch
from assets.invoices.context import CONTEXT_INS, CONTEXT_RESOURCES, assemble
from assets.invoices.data_quality import expectation_checks
from assets.invoices.decisions import DECISION_RESOURCES, decide_step, decision_spec
from assets.invoices.erp import ERPResource
from assets.invoices.payment_saga import saga_executor
from assets.invoices.workflow import (
    EVENT_TYPES,
    PO_TOLERANCE,
    WORKFLOW,
    dead_letter_policy,
    delivery_policies,
    invoice_batches,
    invoice_inbox,
)
from orchestration.core.batch_assets import BatchSteps, build_batch_assets, build_batch_checks
from orchestration.verification.outcome_checks import ActedOnTwice, OutcomeCheck, Reconcile, Verdict

steps = BatchSteps(
    workflow=WORKFLOW,
    prefix="invoice",
    event_types=EVENT_TYPES,
    partitions_def=invoice_batches,
    inbox=invoice_inbox,
    delivery_policies=delivery_policies,
    assemble=assemble,
    decide=decide_step,
    decision=decision_spec(),
    actions=ACTIONS,
    executor=saga_executor,
    context_ins=CONTEXT_INS,
    context_resources=CONTEXT_RESOURCES,
    decision_deps=["invoice_local_model", "invoice_confidence_calibrator"],
    decision_resources=DECISION_RESOURCES,
    action_resources=frozenset({"erp", "outbox"}),
    descriptions={
        "context": "For each invoice in the batch: vendor, PO, prior payments, its guarded free text, the policy "
        "passages its questions need, the facts the guardrails and the model read, and the document assembled "
        "within the token budget, with every source's state and age.",
        "action": "Payments made for the batch's approved invoices (ledger entry, payment, notice to the vendor), "
        "and the terminal state of every event in the batch.",
    },
)
batch = build_batch_assets(steps)
invoice_context, invoice_decisions, invoice_actions = batch.assets
invoice_batch_job = batch.job


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


checks = [
    *build_batch_checks(
        batch,
        steps,
        dead_letter_policy,
        reconcile=Reconcile(
            "decisions_reconcile_with_saga_log_and_erp",
            "Every paid event has a done saga and a live ledger entry, payment and vendor notice of its amount "
            "and currency; every other event has no live effect (or a compensated/escalated saga with a reason); "
            "nothing in the ERP or the outbox for the batch's invoices lacks the saga step that wrote it.",
            lambda b, r: reconcile_batch(b, r["bosun_db"], r["erp"], r["outbox"]),
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
                lambda _b, r: no_payment_exceeds_po(r["erp"]),
                resource_keys={"erp"},
            )
        ],
    ),
    *expectation_checks,
]
