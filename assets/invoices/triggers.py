"""Triggers of the invoice workflow: the inbox and recovery sensors, the feedback sensor and the
daily schedules (context refresh, reconciliation, decision report, settlements)."""

import os

from assets.invoices import jobs as invoices
from assets.invoices import payment_saga
from assets.invoices.batch import steps
from assets.invoices.workflow import batch_policy, business_calendar, recovery_policy
from resources.knowledge_base import PolicyDocuments
from sensors.workflow_triggers import Workday, batch_sensors


def context_inputs_missing() -> str | None:
    """What the context refresh lacks, or None: it indexes the policy documents, which a fresh
    clone has none of until `bosun sample-data` (or `make run`) writes the sample."""
    try:
        PolicyDocuments(directory=os.environ.get("BOSUN_POLICY_DIR") or None).load()
    except FileNotFoundError as err:
        return str(err)
    return None


# `invoice_inbox_sensor` (the context refresh first, until it has run once) and
# `invoice_recovery_sensor`: a batch run that died, crashed or failed with events still
# received is run again, at most `recovery_policy.max_runs` times, then its events are
# dead-lettered; an approved payment deferred by a lease or left in doubt is finished once
# untouched for 5 minutes.
invoice_inbox_sensor, invoice_recovery_sensor = batch_sensors(
    steps,
    invoices.invoice_batch_job,
    batch_policy,
    recovery_policy,
    sagas=payment_saga,
    bootstrap_job=invoices.invoice_context_refresh_job,
    bootstrap_assets=invoices.context_assets,
    missing_prerequisite=context_inputs_missing,
)

# The accounts-payable team's day: Berlin time, German business days.
ap_day = Workday("Europe/Berlin", business_calendar)

# 07:00 Berlin on business days: yesterday's ledger against yesterday's payments (and the
# closed days before it). Every missed day is reconciled after downtime; a slow run is not
# doubled up.
payment_reconciliation_daily = ap_day.each_business_day(
    "payment_reconciliation_daily",
    invoices.reconciliation_job,
    "0 7 * * *",
    "Reconciles the previous day's ledger entries and payments.",
)

# 06:30 Berlin: yesterday's decisions in the report before the working day starts.
invoice_decision_report_daily = ap_day.every_day(
    "invoice_decision_report_daily",
    invoices.invoice_report_job,
    "30 6 * * *",
    "Refreshes the decision report: accuracy, ECE, escalation rate by day, failure patterns.",
)

# 08:00 Berlin on business days: were the payments due yesterday (and on the closed days
# before it) settled by the end of their due day? Missed days are each checked after downtime.
payment_settlements_daily = ap_day.each_business_day(
    "payment_settlements_daily",
    invoices.settlement_job,
    "0 8 * * *",
    "Checks the payments due the previous day against the bank's settlement feed.",
)

sensors = [invoice_inbox_sensor, invoice_recovery_sensor, invoices.invoice_feedback_sensor]
schedules = [
    invoices.invoice_context_refresh_daily,
    payment_reconciliation_daily,
    invoice_decision_report_daily,
    payment_settlements_daily,
]
