"""Recovery without an operator: a batch whose run died, crashed or failed is run again.

Dagster's own mechanisms do what they can (dagster.yaml): `run_retries` re-executes a run
that failed as a whole (from its failed step, so context and decisions are not redone), and
`run_monitoring` fails a run that never started. What they do not cover, this sensor does,
per workflow (built like the inbox sensor):

1. **A dead run worker.** (When its code server is alive, the code server sees the worker
   die and fails the run itself; the sensor releases the leases of every run that ended.) With the DefaultRunLauncher a run is a subprocess of the code
   server on this host, and Dagster's monitoring cannot ask whether it is alive: a SIGKILLed
   worker leaves its run STARTED for good. The sensor (evaluated in the code server, on the
   same host) reads the worker's pid from the run's "Started process for run" engine event;
   when that process is gone (or is a zombie, or a newer process has its pid) the run is
   reported failed, so `run_retries` re-executes it, and the leases it held (held under its
   run id) are released so the retry need not wait for them to expire.
2. **A batch whose latest run ended with events still `received`** (a failed or canceled
   run that Dagster does not retry; a run whose sagas were deferred or in doubt, which fails
   its terminal-state check): requested again under a new run key `BATCH#retryN` (run_key
   de-duplication would swallow the same key), while the batch has had fewer than
   `policy.max_runs` runs in all; after that its still-received events are dead-lettered
   with the number of runs as their attempts.

3. **Sagas left unfinished outside a batch run** (optional `SagaRecovery` hooks): an approved
   payment deferred by a lease or left in doubt is resumed or compensated once nobody touched
   it for a while, and its event's terminal state recorded, as `bosun saga recover` does.

Every recovery is an audit record (kinds `recovery_worker_lost`, `recovery_rerun`,
`recovery_dead_letter`, `recovery_sagas`) and so a metric (`bosun_recoveries_total{action}`).
The cursor is the update time of the last ended run looked at, plus the batches to look at
again (one waiting for Dagster's retry).
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping, Sequence

import dagster as dg

from orchestration.action.leases import Leases
from orchestration.action.saga_log import SagaLog
from orchestration.audit.chain import AuditEntry
from orchestration.core import clock
from orchestration.trigger.batching import BatchRange
from orchestration.trigger.inbox import DEAD_LETTERED, RECEIVED
from orchestration.trigger.recovery import (
    DEAD_LETTER,
    RERUN,
    SAGAS,
    SAGAS_UNDONE,
    WORKER_LOST,
    BatchRun,
    RecoveryPolicy,
    SagaRecovery,
    audit_entry,
    decide,
)
from resources.database import BosunDatabase

_ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
_PARTITION_TAG = "dagster/partition"
_WILL_RETRY_TAG = "dagster/will_retry"
_AUTO_RETRY_RUN_TAG = "dagster/auto_retry_run_id"
_WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def build_recovery_sensor(
    name: str,
    workflow: str,
    event_types: Sequence[str],
    batch_job,  # the workflow's batch job (a JobDefinition or an asset job from define_asset_job)
    policy: RecoveryPolicy = RecoveryPolicy(),
    ignore_run_tags: Mapping[str, str] | None = None,
    saga_recovery: SagaRecovery | None = None,
    minimum_interval_seconds: int = 10,
) -> dg.SensorDefinition:
    """`ignore_run_tags`: runs carrying any of these tags are not the batch's runs (a preview,
    which acts on nothing and leaves the events received on purpose)."""
    ignore = dict(ignore_run_tags or {})
    keys = {"bosun_db", *(saga_recovery.resource_keys if saga_recovery else ())}

    @dg.sensor(
        name=name,
        jobs=[batch_job],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys=keys,
        description=f"Recovers {workflow} batches without an operator: fails runs whose worker died "
        f"(run_retries re-executes them), runs a batch again while its events stay received "
        f"(at most {policy.max_runs} runs), then dead-letters them.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        bosun_db: BosunDatabase = context.resources.bosun_db
        state = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        since = float(state.get("since", now - policy.lookback_s))
        lost = _fail_runs_of_dead_workers(context, batch_job.name, bosun_db, workflow)

        ended = context.instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=batch_job.name, statuses=_ENDED, updated_after=datetime.fromtimestamp(since, timezone.utc)
            ),
            limit=policy.runs_per_tick,
            order_by="update_timestamp",
            ascending=True,
        )
        batches = set(state.get("watch", []))
        for rec in ended:
            since = max(since, rec.update_timestamp.timestamp())
            # A run that ended holds nothing: a worker killed mid-saga (its code server saw it
            # die and failed the run) would otherwise block the batch's next run on its leases
            # (held under its run id) until they expire, and use up the batch's runs meanwhile.
            Leases(bosun_db.resolved_url, rec.dagster_run.run_id).release()
            if not _ignored(rec.dagster_run.tags, ignore) and rec.dagster_run.tags.get(_PARTITION_TAG):
                batches.add(rec.dagster_run.tags[_PARTITION_TAG])

        inbox = bosun_db.inbox()
        requests, watch, audit, done = [], [], [], []
        for batch in sorted(batches):
            try:
                rng = BatchRange.parse(batch)
            except ValueError:
                continue
            runs = _batch_runs(context.instance, batch_job.name, batch, ignore)
            received = inbox.states_between(rng.first, rng.last, list(event_types)).get(RECEIVED, 0)
            d = decide(runs, received, policy, now)
            if d.action == "wait":
                watch.append(batch)
            elif d.action == "rerun":
                key = d.run_key(batch)
                requests.append(
                    dg.RunRequest(
                        run_key=key,
                        partition_key=batch,
                        job_name=batch_job.name,
                        tags={"bosun/recovery_attempt": str(d.runs), "bosun/recovery_of": d.last.run_id},
                    )
                )
                audit.append(
                    audit_entry(
                        workflow,
                        batch,
                        RERUN,
                        {
                            "run_key": key,
                            "runs_so_far": d.runs,
                            "previous_run": d.last.run_id,
                            "previous_status": d.last.status,
                            "received_events": received,
                            "why": d.why,
                        },
                    )
                )
                done.append(f"{batch}: rerun as {key}")
            elif d.action == "dead_letter":
                events = inbox.events_between(rng.first, rng.last, list(event_types))
                states = [
                    {
                        "key": ev.key,
                        "status": "dead_lettered",
                        "attempts": d.runs,
                        "reason": f"recovery gave up: {d.why}",
                    }
                    for ev in events
                ]
                audit.append(
                    audit_entry(
                        workflow,
                        batch,
                        DEAD_LETTER,
                        {
                            "runs": d.runs,
                            "last_run": d.last.run_id,
                            "last_status": d.last.status,
                            "events": [ev.key for ev in events],
                            "why": d.why,
                        },
                    )
                )
                audit += [
                    AuditEntry(
                        "outcome", s["key"], {"status": s["status"], "reason": s["reason"], "attempts": d.runs}, batch
                    )
                    for s in states
                ]
                # Audit first, state last (as a batch run does): a tick that dies in between
                # leaves the events received, and the next tick dead-letters them again.
                bosun_db.audit().append(audit)
                audit = []
                inbox.set_states(states, batch, only_from=(RECEIVED,))
                done.append(f"{batch}: {len(states)} event(s) dead-lettered after {d.runs} run(s)")
        if audit:
            bosun_db.audit().append(audit)
        if saga_recovery is not None:
            done += _recover_stale_sagas(context, saga_recovery, bosun_db)
        cursor = json.dumps({"since": since, "watch": watch})
        said = "; ".join(lost + done)
        if said:
            context.log.info(said)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        return dg.SensorResult(
            skip_reason=said or f"nothing to recover ({len(watch)} batch(es) waiting)", cursor=cursor
        )

    return _sensor


def _ignored(tags: Mapping[str, str], ignore: Mapping[str, str]) -> bool:
    return any(tags.get(k) == v for k, v in ignore.items())


def _batch_runs(instance: dg.DagsterInstance, job_name: str, batch: str, ignore: Mapping[str, str]) -> list[BatchRun]:
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags={_PARTITION_TAG: batch}))
    return [
        BatchRun(
            run_id=r.dagster_run.run_id,
            status=r.dagster_run.status.value,
            created_at=r.create_timestamp.timestamp(),
            ended_at=r.end_time,
            will_retry=r.dagster_run.tags.get(_WILL_RETRY_TAG) == "true",
            retried_as=r.dagster_run.tags.get(_AUTO_RETRY_RUN_TAG),
            started=r.start_time is not None,
        )
        for r in records
        if not _ignored(r.dagster_run.tags, ignore)
    ]


# ---- sagas outside batch runs -------------------------------------------------------------


def _recover_stale_sagas(
    context: dg.SensorEvaluationContext, hooks: SagaRecovery, bosun_db: BosunDatabase
) -> list[str]:
    url = bosun_db.resolved_url
    before = clock.now() - timedelta(seconds=hooks.stale_after_s)
    stale = SagaLog(url).unfinished(hooks.workflow, updated_before=before, limit=hooks.per_tick * 5)
    if not stale:
        return []
    # A saga's id is its event's key; a received event's saga is finished by its batch's re-run.
    events = bosun_db.inbox().lookup([r["saga_id"] for r in stale])
    status = {r["saga_id"]: events.get(r["saga_id"], {}).get("status") for r in stale}
    # An event recovery gave up on is dead-lettered for a person: its saga is undone rather than
    # carried forward, so the targets hold nothing half-done for it and it is not paid behind
    # its dead letter's back. `bosun dlq retry` starts it afresh.
    given_up = [k for k, s in status.items() if s == DEAD_LETTERED][: hooks.per_tick]
    ids = [k for k, s in status.items() if s not in (RECEIVED, DEAD_LETTERED)][: hooks.per_tick]
    if not ids and not given_up:
        return []
    resources = {k: getattr(context.resources, k) for k in hooks.resource_keys | {"bosun_db"}}
    executor = hooks.executor(resources, f"recovery-sensor:{os.getpid()}")
    said = _undo_given_up(executor, given_up, hooks.workflow, bosun_db) if given_up else []
    if not ids:
        return said
    out = executor.execute(ids)
    settled = hooks.record_settled(resources, out, "recovered by the recovery sensor")
    bosun_db.audit().append(
        [
            audit_entry(
                hooks.workflow,
                None,
                SAGAS,
                {
                    "sagas": ids,
                    "done": len(out.done),
                    "failed": len(out.failed),
                    "refused": len(out.refused),
                    "deferred": len(out.deferred),
                    "in_doubt": len(out.unfinished),
                    "events_settled": settled,
                },
            )
        ]
    )
    return said + [
        f"{len(ids)} stale saga(s): {len(out.done)} done, {len(out.failed)} failed or compensated, "
        f"{len(out.deferred) + len(out.unfinished)} still unfinished"
    ]


def _undo_given_up(executor, saga_ids: list[str], workflow: str, bosun_db: BosunDatabase) -> list[str]:
    """Roll back the sagas of dead-lettered events, each audited with what was undone; one
    that cannot be undone now (deferred, a compensation failing) stays unfinished for the next tick."""
    undone, left = {}, []
    for saga_id in saga_ids:
        out = executor.rollback(saga_id)
        failed = out.failed.get(saga_id, {})
        if saga_id in out.deferred or saga_id in out.unfinished or failed.get("compensation_error"):
            left.append(saga_id)
        undone[saga_id] = {
            "compensated": failed.get("compensated", []),
            "compensation_error": failed.get("compensation_error"),
            "deferred": saga_id in out.deferred,
        }
    bosun_db.audit().append([audit_entry(workflow, None, SAGAS_UNDONE, {"sagas": undone})])
    return [f"{len(saga_ids)} saga(s) of dead-lettered events undone ({len(left)} left for the next tick)"]


# ---- dead run workers ---------------------------------------------------------------------


def _fail_runs_of_dead_workers(
    context: dg.SensorEvaluationContext, job_name: str, bosun_db: BosunDatabase, workflow: str
) -> list[str]:
    instance = context.instance
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []  # other launchers' workers are checked by Dagster's run monitoring
    out = []
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.STARTED])):
        worker = _worker_of(instance, run.run_id)
        if worker is None or _process_alive(*worker):
            continue
        pid = worker[0]
        if instance.get_run_by_id(run.run_id).status != dg.DagsterRunStatus.STARTED:
            continue  # it ended while we looked
        instance.add_run_tags(run.run_id, {"bosun/worker_lost": str(pid)})
        instance.report_run_failed(
            run,
            f"Run worker (pid {pid}) is gone: its process died without ending the "
            "run. Marked failed by the recovery sensor so that run_retries re-executes it.",
        )
        # Its leases are held under its run id; a dead holder's leases would otherwise block
        # the retry until they expire.
        Leases(bosun_db.resolved_url, run.run_id).release()
        bosun_db.audit().append(
            [audit_entry(workflow, run.tags.get(_PARTITION_TAG), WORKER_LOST, {"run": run.run_id, "pid": pid})]
        )
        out.append(f"run {run.run_id} failed: worker pid {pid} is gone")
    return out


def _worker_of(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it said it started) of the run's latest worker process, if it said so."""
    found = None
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        m = _WORKER_PID.search(entry.message or "")
        if m:
            found = (int(m.group(1)), entry.timestamp)
    return found


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _process_alive(pid: int, reported_at: float) -> bool:
    """Whether the process `pid` that reported itself at `reported_at` still runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a zombie is dead, and a process started after the report is another one
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    if fields[0] == "Z":
        return False
    boot = _boot_time()
    if boot is None:
        return True
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= reported_at + 2.0
