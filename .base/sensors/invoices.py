"""Triggers of the invoice workflow: the inbox sensor and the daily context refresh."""


import dagster as dg

from assets import invoices
from assets.invoices.workflow import EVENT_TYPES, batch_policy, invoice_batches
from sensors.inbox_batches import build_inbox_batch_sensor

invoice_inbox_sensor = build_inbox_batch_sensor(
    name="invoice_inbox_sensor",
    event_types=EVENT_TYPES,
    partitions_def=invoice_batches,
    batch_job=invoices.invoice_batch_job,
    bootstrap_job=invoices.invoice_context_refresh_job,
    bootstrap_assets=invoices.context_assets,
    policy=batch_policy,
)

# 06:00 in the accounts-payable team's time zone, before the working day starts.
invoice_context_refresh_daily = dg.ScheduleDefinition(
    name="invoice_context_refresh_daily",
    job=invoices.invoice_context_refresh_job,
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/Berlin",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refreshes the vendor and purchase-order snapshots and the policy index.",
)

sensors = [invoice_inbox_sensor]
schedules = [invoice_context_refresh_daily]
