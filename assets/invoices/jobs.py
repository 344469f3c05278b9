"""The invoice workflow's asset lists and jobs (what its triggers launch)."""

from assets.invoices.batch import checks as invoice_checks
from assets.invoices.batch import invoice_actions, invoice_batch_job, invoice_context, invoice_decisions
from assets.invoices.calibration import invoice_confidence_calibrator
from assets.invoices.context import policy_index, purchase_orders, vendors
from assets.invoices.feedback import feedback_loop, invoice_feedback, invoice_local_model, invoice_model_candidate
from assets.invoices.reconciliation import payment_reconciliation, reconciliation_job
from assets.invoices.report import invoice_decision_report
from assets.invoices.settlements import payment_settlements, settlement_job
from assets.invoices.workflow import WORKFLOW, erp_payments, invoice_inbox
from orchestration.core.workflows import asset_job
from sensors.feedback import feedback_triggers
from sensors.workflow_triggers import context_refresh

context_assets = [vendors, purchase_orders, policy_index]
batch_assets = [invoice_context, invoice_decisions, invoice_actions]
calibration_assets = [invoice_confidence_calibrator]
feedback_assets = [invoice_feedback, invoice_model_candidate, invoice_local_model]
report_assets = [invoice_decision_report]
assets = [
    invoice_inbox,
    *context_assets,
    *calibration_assets,
    *batch_assets,
    erp_payments,
    payment_reconciliation,
    payment_settlements,
    *feedback_assets,
    *report_assets,
]
checks = invoice_checks

# Every day at 06:00 in the accounts-payable team's time zone, before the working day starts.
invoice_context_refresh_job, invoice_context_refresh_daily = context_refresh(
    WORKFLOW, "invoice", context_assets, "Europe/Berlin", "0 6 * * *", "the ERP snapshots and the policy index"
)

# Its own job: it needs reviewed outcomes (the labelled sample for now), which a fresh
# deployment may not have, and the context refresh must not fail for want of them.
invoice_calibration_job = asset_job(
    WORKFLOW,
    "invoice_calibration_job",
    calibration_assets,
    "Refit the confidence calibrator on reviewed outcomes and check its ECE.",
)

# The feedback loop: reviewed labels -> retrained candidate (blocking check) -> promoted
# local model -> calibrator refitted for it. `invoice_feedback_sensor` starts it once
# BOSUN_INVOICES_RETRAIN_MIN_FEEDBACK (default 100) new reviewed labels exist; checked every 5 minutes.
invoice_feedback_job, invoice_feedback_sensor = feedback_triggers(
    "invoice",
    feedback_loop,
    [*feedback_assets, *calibration_assets],
    "Retrain the local model on reviewed labels, promote it if it is not worse, refit the calibrator.",
)

invoice_report_job = asset_job(
    WORKFLOW, "invoice_report_job", report_assets, "Decision quality by day and the patterns of failed decisions."
)

jobs = [
    invoice_batch_job,
    invoice_context_refresh_job,
    invoice_calibration_job,
    reconciliation_job,
    invoice_feedback_job,
    invoice_report_job,
    settlement_job,
]
