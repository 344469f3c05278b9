"""What to do with a batch whose run ended and left events `received`: wait, run it again, or give up.

Pure decisions over a batch's runs, so the recovery sensor (sensors/recovery.py) stays a thin
reader and writer and the rules can be tested without a daemon. A batch is run at most
`max_runs` times in all (its first run, Dagster's automatic retries and the recovery runs;
launches that never started count only against `max_launches`); after that its
still-received events are dead-lettered with the number of runs as attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

from orchestration.audit.chain import AuditEntry

# Audit kinds of the recovery records; `bosun_recoveries_total{action}` counts them.
RECOVERY_KIND_PREFIX = "recovery_"
WORKER_LOST, RERUN, DEAD_LETTER, SAGAS = "worker_lost", "rerun", "dead_letter", "sagas"
# The saga of an event recovery gave up on (dead-lettered) is undone, not carried forward.
SAGAS_UNDONE = "sagas_undone"
RECOVERY_KINDS = tuple(RECOVERY_KIND_PREFIX + a for a in (WORKER_LOST, RERUN, DEAD_LETTER, SAGAS, SAGAS_UNDONE))
RETRY_KEY_MARK = "#retry"

IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


@dataclass(frozen=True)
class RecoveryPolicy:
    """Per workflow: how often a batch is run before its events are dead-lettered, and how
    long a failed run Dagster said it will retry (`dagster/will_retry`) is left to Dagster."""

    max_runs: int = 4  # runs that started executing (a launch that never started is no attempt)
    max_launches: int = 12  # every run, started or not: a launch that keeps failing ends too
    dagster_retry_grace_s: float = 60.0
    lookback_s: float = 24 * 3600.0  # a fresh sensor looks at runs that ended this long ago
    runs_per_tick: int = 200


@dataclass(frozen=True)
class SagaRecovery:
    """A workflow's hooks for sagas left unfinished outside a batch run (an approved payment
    whose executor was deferred by a lease, or died in doubt): the recovery sensor resumes or
    compensates those untouched for `stale_after_s` whose event is no longer `received` (a
    received event's saga is its batch's re-run's), `per_tick` at a time, and records them
    as `bosun saga recover` does. `executor(resources, holder)` -> SagaExecutor;
    `record_settled(resources, outcome, note)` writes the events' terminal states and audit."""

    workflow: str
    resource_keys: frozenset[str]
    executor: Callable[[Mapping[str, Any], str], Any]
    record_settled: Callable[..., int]
    stale_after_s: float = 300.0
    per_tick: int = 100


@dataclass(frozen=True)
class BatchRun:
    """One run of a batch, as the recovery decision needs it."""

    run_id: str
    status: str  # DagsterRunStatus value
    created_at: float
    ended_at: float | None
    will_retry: bool = False  # Dagster's run_retries said it will re-execute this run
    retried_as: str | None = None  # the run Dagster launched to retry it
    started: bool = True  # its worker began executing (RUN_START); a failed launch did not


@dataclass(frozen=True)
class RecoveryDecision:
    action: Literal["none", "wait", "rerun", "dead_letter"]
    runs: int  # runs of the batch so far
    last: BatchRun | None = None
    why: str = ""

    def run_key(self, batch: str) -> str:
        """A new run key per attempt: run_key deduplication must not swallow the retry."""
        return f"{batch}{RETRY_KEY_MARK}{self.runs}"


def decide(runs: Sequence[BatchRun], received: int, policy: RecoveryPolicy, now: float) -> RecoveryDecision:
    """The next step for one batch, from its runs (any order) and its events still received."""
    ordered = sorted(runs, key=lambda r: r.created_at)
    if not ordered:
        return RecoveryDecision("none", 0, None, "the batch has no run")
    last = ordered[-1]
    if any(r.status in IN_PROGRESS for r in ordered):
        return RecoveryDecision("wait", len(ordered), last, "a run of the batch is queued or running")
    if received == 0:
        return RecoveryDecision("none", len(ordered), last, "every event is terminal")
    if (
        last.status == "FAILURE"
        and last.will_retry
        and not last.retried_as
        and now - (last.ended_at or last.created_at) < policy.dagster_retry_grace_s
    ):
        return RecoveryDecision("wait", len(ordered), last, "Dagster's run retry will re-execute it")
    # A run that never started (its launch failed, it timed out starting: an overloaded or
    # restarting host) did not try the events: it counts against max_launches only.
    started = sum(1 for r in ordered if r.started)
    if started < policy.max_runs and len(ordered) < policy.max_launches:
        return RecoveryDecision(
            "rerun",
            len(ordered),
            last,
            f"{received} event(s) still received after run {last.run_id} ended {last.status}",
        )
    return RecoveryDecision(
        "dead_letter",
        max(started, 1),
        last,
        f"{received} event(s) still received after {started} run(s) of the batch "
        f"({len(ordered)} launched; limits {policy.max_runs} run(s), {policy.max_launches} "
        f"launches); last run {last.run_id} ended {last.status}",
    )


def audit_entry(workflow: str, batch: str | None, action: str, record: dict) -> AuditEntry:
    """Every recovery is an audit record (and so a metric)."""
    return AuditEntry(RECOVERY_KIND_PREFIX + action, batch, {"workflow": workflow, "action": action, **record}, batch)
