"""The standard outcome checks of a workflow's batch, built once for every workflow.

One multi-asset check on the workflow's action asset, per batch partition:

- every event of the batch reached a terminal state (nothing lost);
- the batch's recorded outcomes reconcile with the saga log and the targets
  (orchestration/verification/outcome_reconciliation.py; the workflow reads its targets' rows);
- no entity was acted on twice, across all batches (the workflow's query on its target);
- open dead letters stay within the workflow's limits (non-blocking: a backlog is for an
  operator to see, not a reason to stop the next batch);
- the workflow's own checks (`OutcomeCheck`), in the same step.

One step rather than one per check: each step of a run costs event-log writes, and these are
a few cheap queries (shared/notes/performance.md). The results close each event's audit chain
(one `check` record per batch). A preview acts on nothing: the checks about the batch's own
events pass marked `preview`, the global ones run, and nothing is audited.

Hooks receive the run's resources by key (`Resources`), so the engine needs no resource class:
Bosun's database is the resource `bosun_db` (`BOSUN_DB`); a hook names the other keys it reads.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Optional, Protocol, Sequence

import dagster as dg

from orchestration.audit.chain import AuditLog, check_results_entry
from orchestration.trigger.batching import BatchRange
from orchestration.trigger.dead_letters import DeadLetterPolicy, DeadLetters
from orchestration.trigger.inbox import TERMINAL_STATES, Inbox
from orchestration.verification import outcome_reconciliation
from orchestration.verification.outcome_reconciliation import Reconciliation

BOSUN_DB = "bosun_db"
TERMINAL_CHECK = "every_event_reached_a_terminal_state"
DEAD_LETTER_CHECK = "dead_letters_within_limits"

Resources = Mapping[str, Any]  # the run's resources by key


class BosunStores(Protocol):
    """What the checks read of Bosun's database resource (`bosun_db`)."""

    def inbox(self) -> Inbox: ...

    def dead_letters(self) -> DeadLetters: ...

    def audit(self) -> AuditLog: ...


@dataclass(frozen=True)
class Verdict:
    """One check's result before it is addressed to an asset: Dagster metadata values allowed."""

    passed: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)
    description: Optional[str] = None


@dataclass(frozen=True)
class OutcomeCheck:
    """One check of the step: the standard ones are built from the workflow's hooks, and a
    workflow adds its own (`extra_checks`)."""

    name: str
    description: str
    evaluate: Callable[[BatchRange, Resources], Verdict]
    resource_keys: Collection[str] = ()
    blocking: bool = True
    # About the batch's own events: a preview leaves them untouched, so it passes marked preview.
    batch_scoped: bool = False


@dataclass(frozen=True)
class Reconcile:
    """The workflow's reconciliation of a batch: its events, sagas and the targets' rows."""

    name: str  # e.g. decisions_reconcile_with_saga_log_and_erp
    description: str
    run: Callable[[BatchRange, Resources], Reconciliation]
    resource_keys: Collection[str] = ()


@dataclass(frozen=True)
class ActedOnTwice:
    """The workflow's query for entities its actions took effect on more than once."""

    name: str  # e.g. no_order_reserved_twice
    description: str
    find: Callable[[Resources], Sequence[Any]]  # the entities acted on twice, across all batches
    count_name: str  # the metadata key of their number (plotted by the UI)
    resource_keys: Collection[str] = ()


def terminal_states(batch: BatchRange, bosun_db: BosunStores, event_types: Sequence[str]) -> Verdict:
    states = bosun_db.inbox().batch_states(batch.key, event_types)
    stuck = {s: n for s, n in states.items() if s not in TERMINAL_STATES}
    return Verdict(
        passed=not stuck,
        metadata={
            "events": sum(states.values()),
            **{f"state_{s}": n for s, n in sorted(states.items())},
            "not_terminal": sum(stuck.values()),
        },
    )


def reconciliation_verdict(rec: Reconciliation) -> Verdict:
    meta = outcome_reconciliation.metadata(rec)
    return Verdict(
        passed=rec.ok,
        description=None if rec.ok else f"{len(rec.discrepancies)} discrepancies: " + ", ".join(rec.events_named()[:5]),
        metadata={
            "events": meta["events"],
            "live_effects": meta["live_effects"],
            "discrepancies": meta["discrepancies"],
            "saga_status": dg.MetadataValue.json(meta["saga_status"]),
            "discrepancies_by_kind": dg.MetadataValue.json(meta["discrepancies_by_kind"]),
            "events_with_discrepancies": dg.MetadataValue.json(meta["events_with_discrepancies"]),
            "examples": dg.MetadataValue.json(meta["examples"]),
        },
    )


def acted_on_twice_verdict(found: Sequence[Any], count_name: str) -> Verdict:
    return Verdict(passed=not found, metadata={count_name: len(found), "examples": dg.MetadataValue.json(found[:10])})


def dead_letters_within_limits(bosun_db: BosunStores, event_types: Sequence[str], policy: DeadLetterPolicy) -> Verdict:
    stats = bosun_db.dead_letters().stats(event_types)
    breaches = policy.breaches(stats)
    # The first open ones by name, so the UI says which events wait for a person, not only how many.
    first_open = [
        {
            "dead_letter_id": d["id"],
            "event_key": d["event_key"],
            "type": d["type"],
            "attempts": d["attempts"],
            "since": d["first_failed_at"].isoformat(),
            "error": (d["error"] or "")[:200],
        }
        for d in bosun_db.dead_letters().list(status="open", types=event_types, limit=10)
    ]
    return Verdict(
        passed=not breaches,
        description="; ".join(breaches) or None,
        metadata={
            "open_dead_letters": stats.open,
            "oldest_open_age_s": stats.oldest_open_age_s or 0.0,
            "max_open": policy.max_open,
            "max_oldest_age_s": policy.max_oldest_age_s,
            "first_open_dead_letters": dg.MetadataValue.json(first_open),
            "to_inspect": "bosun dlq list, then bosun dlq retry ID or bosun dlq drop ID --reason TEXT",
        },
    )


def build_outcome_checks(
    name: str,
    asset: dg.AssetsDefinition,
    partitions_def: dg.PartitionsDefinition,
    event_types: Sequence[str],
    dead_letter_policy: DeadLetterPolicy,
    reconcile: Reconcile,
    acted_on_twice: ActedOnTwice,
    extra_checks: Sequence[OutcomeCheck] = (),
    preview_tag: Optional[str] = None,
) -> dg.AssetChecksDefinition:
    """The batch's outcome checks on `asset` as one multi-asset check named `name`. Results
    come in this order: terminal states, reconciliation, acted on twice, the extra checks,
    dead letters. A run tagged `preview_tag=true` is a preview."""
    types = list(event_types)
    checks = [
        OutcomeCheck(
            TERMINAL_CHECK,
            "Nothing lost: every event of the batch is done, escalated, rejected or dead-lettered.",
            lambda batch, r: terminal_states(batch, r[BOSUN_DB], types),
            batch_scoped=True,
        ),
        OutcomeCheck(
            reconcile.name,
            reconcile.description,
            lambda batch, r: reconciliation_verdict(reconcile.run(batch, r)),
            reconcile.resource_keys,
            batch_scoped=True,
        ),
        OutcomeCheck(
            acted_on_twice.name,
            acted_on_twice.description,
            lambda _batch, r: acted_on_twice_verdict(acted_on_twice.find(r), acted_on_twice.count_name),
            acted_on_twice.resource_keys,
        ),
        *extra_checks,
        OutcomeCheck(
            DEAD_LETTER_CHECK,
            "Open dead letters stay under the workflow's count and age limits.",
            lambda _batch, r: dead_letters_within_limits(r[BOSUN_DB], types, dead_letter_policy),
            blocking=False,
        ),
    ]
    keys = {BOSUN_DB}.union(*(c.resource_keys for c in checks))

    @dg.multi_asset_check(
        name=name,
        specs=[
            dg.AssetCheckSpec(
                c.name, asset=asset, partitions_def=partitions_def, blocking=c.blocking, description=c.description
            )
            for c in checks
        ],
        required_resource_keys=keys,
    )
    def _outcome_checks(context: dg.AssetCheckExecutionContext):
        preview = preview_tag is not None and context.run.tags.get(preview_tag) == "true"
        batch = BatchRange.parse(context.partition_key)
        resources = {k: getattr(context.resources, k) for k in keys}
        results = []
        for c in checks:
            # A preview acts on nothing: the batch's events stay received for the real run.
            verdict = Verdict(True, {"preview": True}) if preview and c.batch_scoped else c.evaluate(batch, resources)
            results.append(
                dg.AssetCheckResult(
                    asset_key=asset.key,
                    check_name=c.name,
                    passed=verdict.passed,
                    description=verdict.description,
                    metadata=dict(verdict.metadata),
                )
            )
        if not preview:  # the batch's check results close each of its events' audit chains
            resources[BOSUN_DB].audit().append(
                [check_results_entry(context.partition_key, context.run.run_id, results)]
            )
        yield from results

    return _outcome_checks
