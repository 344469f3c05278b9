"""When the audit log's retention runs: nightly, in a named time zone."""

import dagster as dg

from orchestration.audit.retention import audit_archive

audit_retention_job = dg.define_asset_job(
    "audit_retention_job",
    selection=dg.AssetSelection.assets(audit_archive),
    executor_def=dg.in_process_executor,
    description="Archive and prune audit records older than BOSUN_AUDIT_RETENTION_DAYS behind a checkpoint.",
)

# 03:30 Berlin: after the day's batches and before the 06:00 context refresh; one run at a
# time (a prune takes the audit head's lock only for its final delete).
audit_retention_daily = dg.ScheduleDefinition(
    name="audit_retention_daily",
    job=audit_retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="Europe/Berlin",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Archives (gzip'd JSONL with hashes) and prunes audit records past retention, "
    "writing a checkpoint the chain is verified from.",
)

assets = [audit_archive]
jobs = [audit_retention_job]
schedules = [audit_retention_daily]
