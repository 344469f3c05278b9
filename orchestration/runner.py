"""Processing the inbox in-process, batch by batch, without a daemon.

The same job, partitions and batch cutting as the sensor path, driven by a loop: this is
what `bosun demo`, the benchmark and the tests use to run a workflow end to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import dagster as dg

from orchestration.batching import BatchPolicy, cut_batches
from orchestration.inbox import Inbox
from orchestration import clock


# The run's events still go to the instance (and the UI); only the console stays quiet.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# As dagster.yaml: DEBUG chatter (the IO manager's "writing file at ...") is not stored,
# which saves a fifth of the event-log writes of a batch run.
INSTANCE_OVERRIDES = {"python_logs": {"python_log_level": "INFO"}}


@dataclass
class BatchRunReport:
    batches: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    check_failures: list[str] = field(default_factory=list)  # "batch: check" that did not pass


def run_pending_batches(defs: dg.Definitions, job_name: str, partitions_def: dg.DynamicPartitionsDefinition,
                        event_types: Sequence[str], inbox: Inbox, instance: dg.DagsterInstance,
                        policy: BatchPolicy, cursor: int = 0,
                        on_batch: Callable[[str, int], None] | None = None) -> BatchRunReport:
    """Cut every pending event into batches (no waiting) and run one job per batch;
    `on_batch(key, events)` after each (a progress bar, say)."""
    job = defs.resolve_job_def(job_name)
    policy = BatchPolicy(max_events=policy.max_events, max_wait_seconds=0, max_batches_per_tick=10_000)
    report = BatchRunReport()
    while True:
        pending = inbox.pending_after(cursor, list(event_types), policy.max_events * 50)
        batches = cut_batches(pending, policy, clock.now())
        if not batches:
            return report
        keys = [b.key for b in batches]
        instance.add_dynamic_partitions(partitions_def.name, keys)
        for key in keys:
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                            run_config=QUIET)
            (report.batches if result.success else report.failed).append(key)
            if on_batch:
                batch = next(b for b in batches if b.key == key)
                on_batch(key, sum(1 for seq, _ in pending if batch.first <= seq <= batch.last))
            report.check_failures += [f"{key}: {e.check_name}" for e in result.get_asset_check_evaluations()
                                      if not e.passed]
        cursor = batches[-1].last
