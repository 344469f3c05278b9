"""A workflow's batch as three partitioned assets, one per layer, and the job that runs them:
`<prefix>_context` -> `<prefix>_decisions` -> `<prefix>_actions`, plus their standard checks.

The engine does every step that is the same for all workflows (the batch claims its events
and triages their delivery, hashes each context, runs the decision loop and its figures,
plans and runs the sagas, maps every event to one terminal state, submits escalations,
writes the audit chain, then the inbox states, then the batch's metrics); a workflow
declares in `BatchSteps` the three things only it knows: how its context is assembled, how
it reasons, and how its decisions act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import dagster as dg

from orchestration.action.batch import (
    ActionSpec,
    audit_entries,
    count_by_status,
    execute,
    outcomes,
    review_items,
    saga_counts,
)
from orchestration.action.saga_executor import SagaExecutor
from orchestration.audit.anchors import anchor_metadata
from orchestration.context.frame import BatchFrame, context_hash, open_batch
from orchestration.core import clock
from orchestration.core.executors import batch_executor
from orchestration.core.lineage import layer_group
from orchestration.core.settings import IN_RUN_IO_MANAGER
from orchestration.decision.batch import DecisionSpec, decision_metadata
from orchestration.decision.guardrail_checks import build_guardrail_checks
from orchestration.review.queue import review_console_metadata
from orchestration.trigger.dead_letters import DeadLetterPolicy
from orchestration.trigger.delivery import DeliveryPolicy
from orchestration.trigger.inbox import RECEIVED
from orchestration.verification.batch_observation import BatchObservation, observe_batch
from orchestration.verification.outcome_checks import ActedOnTwice, OutcomeCheck, Reconcile, build_outcome_checks

# A run tagged so plans its sagas and executes nothing: the plans are its metadata.
PREVIEW_TAG = "bosun/preview"


@dataclass(frozen=True)
class StepCall:
    """What a workflow's step is handed: the Dagster context, its declared inputs (by name)
    and resources (by key), and, where the step adds figures, a dict for them."""

    context: Any
    inputs: Mapping[str, Any]
    resources: Mapping[str, Any]
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BatchSteps:
    """The workflow's part of its batch."""

    workflow: str
    prefix: str  # the assets are <prefix>_context, <prefix>_decisions, <prefix>_actions
    event_types: Sequence[str]
    partitions_def: dg.DynamicPartitionsDefinition
    inbox: dg.AssetSpec
    delivery_policies: Mapping[str, DeliveryPolicy]
    # (call, frame) -> one context record per kept event, each started by `frame.base_record`.
    assemble: Callable[[StepCall, BatchFrame], list[dict]]
    # (call, contexts, seconds) -> the decisions (`orchestration.decision.batch.decide_batch`).
    decide: Callable[[StepCall, list[dict], dict], list[dict]]
    decision: DecisionSpec
    actions: ActionSpec
    # (resources, holder) -> the saga executor of the workflow's action plan.
    executor: Callable[[Mapping[str, Any], str], SagaExecutor]
    context_ins: Mapping[str, dg.AssetIn] = field(default_factory=dict)
    context_resources: frozenset[str] = frozenset()
    decision_deps: Sequence[Any] = ()  # lineage only: the model and calibrator the decisions read
    decision_resources: frozenset[str] = frozenset()
    action_resources: frozenset[str] = frozenset()
    descriptions: Mapping[str, str] = field(default_factory=dict)  # by layer


@dataclass(frozen=True)
class BatchAssets:
    context: dg.AssetsDefinition
    decisions: dg.AssetsDefinition
    actions: dg.AssetsDefinition
    job: dg.UnresolvedAssetJobDefinition

    @property
    def assets(self) -> list[dg.AssetsDefinition]:
        return [self.context, self.decisions, self.actions]


def _resources(context, keys: frozenset[str]) -> dict[str, Any]:
    return {k: getattr(context.resources, k) for k in keys}


def build_batch_assets(steps: BatchSteps) -> BatchAssets:
    p, wf = steps.prefix, steps.workflow
    ctx_name, dec_name, act_name = f"{p}_context", f"{p}_decisions", f"{p}_actions"
    ctx_keys = frozenset({"bosun_db"}) | steps.context_resources
    dec_keys = frozenset({"bosun_db"}) | steps.decision_resources
    act_keys = frozenset({"bosun_db", "llm"}) | steps.action_resources
    rule_names = tuple(steps.decision.policy.rule_names())
    observation = BatchObservation(wf, rule_names, {"context": ctx_name, "decision": dec_name, "action": act_name})

    @dg.asset(
        name=ctx_name,
        partitions_def=steps.partitions_def,
        group_name=layer_group(wf, "context"),
        kinds={"python"},
        io_manager_key=IN_RUN_IO_MANAGER,
        ins=dict(steps.context_ins),
        deps=[steps.inbox],
        required_resource_keys=set(ctx_keys),
        description=steps.descriptions.get(
            "context", f"Each {wf} event of the batch with the context it is decided on."
        ),
    )
    def _context(context, **inputs):
        resources = _resources(context, ctx_keys)
        frame = open_batch(
            resources["bosun_db"].inbox(), context.partition_key, steps.event_types, steps.delivery_policies, wf
        )
        call = StepCall(context, inputs, resources)
        records = steps.assemble(call, frame)
        for r in records:
            r["context_hash"] = context_hash(r)
        return dg.Output(records, metadata={"events": len(records), **call.metadata, **frame.metadata()})

    @dg.asset(
        name=dec_name,
        partitions_def=steps.partitions_def,
        group_name=layer_group(wf, "decision"),
        kinds={"ai"},
        io_manager_key=IN_RUN_IO_MANAGER,
        ins={ctx_name: dg.AssetIn()},
        deps=list(steps.decision_deps),
        required_resource_keys=set(dec_keys),
        description=steps.descriptions.get(
            "decision",
            "One decision per event through the decision loop: the proposal, the guardrails' verdict, the "
            "calibrated confidence, more context or the violated rule told to the model where needed, the route.",
        ),
    )
    def _decisions(context, **inputs):
        call = StepCall(context, inputs, _resources(context, dec_keys))
        seconds: dict[str, float] = {}
        decisions = steps.decide(call, inputs[ctx_name], seconds)
        return dg.Output(decisions, metadata={**decision_metadata(decisions), **call.metadata, **seconds})

    @dg.asset(
        name=act_name,
        partitions_def=steps.partitions_def,
        group_name=layer_group(wf, "action"),
        kinds={"saga"},
        io_manager_key=IN_RUN_IO_MANAGER,
        ins={dec_name: dg.AssetIn()},
        required_resource_keys=set(act_keys),
        description=steps.descriptions.get(
            "action", "The batch's sagas for the decisions that act, and the terminal state of every event."
        ),
    )
    def _actions(context, **inputs):
        resources = _resources(context, act_keys)
        return act(context, resources, inputs[dec_name], steps, observation)

    job = dg.define_asset_job(
        f"{p}_batch_job",
        selection=dg.AssetSelection.assets(_context, _decisions, _actions),
        # In-process by default: the steps are sequential anyway, and a subprocess per step
        # costs seconds (shared/notes/performance.md); concurrency comes from several runs.
        # BOSUN_RUN_EXECUTOR=celery spreads the steps over Celery workers (executors.py).
        executor_def=batch_executor(),
        tags={"bosun/workflow": wf},
        description=f"Process one batch of {wf} events: context, decisions, actions, checks.",
    )
    return BatchAssets(_context, _decisions, _actions, job)


def act(context, resources: Mapping[str, Any], decisions: list[dict], steps: BatchSteps, observation) -> dg.Output:
    """Run the sagas, then record every event's outcome: review queue and audit first, the
    inbox state last, so a run that dies in between leaves the events "received" and the
    replay redoes them idempotently."""
    spec, batch_id, db = steps.actions, context.partition_key, resources["bosun_db"]
    executor = steps.executor(resources, context.run.run_id)
    if context.run.tags.get(PREVIEW_TAG) == "true":  # nothing executes: the plans are the metadata
        sagas = execute(decisions, executor, spec, batch_id, preview=True)
        plans = sagas.preview
        return dg.Output(
            {"batch": batch_id, "preview": True, "plans": len(plans)},
            metadata={"preview": True, "planned_sagas": len(plans), "plans": dg.MetadataValue.json(plans[:100])},
        )
    sagas = execute(decisions, executor, spec, batch_id)
    acted_at = clock.now()
    states = outcomes(decisions, sagas, spec)
    db.review_queue().submit(spec.workflow, review_items(decisions, spec), batch_id)
    last_seq, head_hash = db.audit().append_head(audit_entries(decisions, sagas, states, batch_id, spec))
    # Only events still "received": a reviewer may already have answered an escalation
    # submitted above, and that answer stands.
    db.inbox().set_states(states, batch_id, only_from=(RECEIVED,))
    by_status = count_by_status(states)
    planned = sum(1 for d in decisions if d["route"] == spec.acting_route)
    figures = observe_batch(
        context,
        observation,
        decisions,
        states,
        db.metrics(),
        acted_at,
        llm_enabled=resources["llm"].enabled,
        details={"states": by_status, "sagas": saga_counts(planned, sagas)},
    )
    summary = {"batch": batch_id, "events": len(states), "by_status": by_status, "acted": len(sagas.done)}
    return dg.Output(
        summary,
        metadata={
            # Where this batch's escalations are answered, when a reviewer console is known;
            # first, so the run's event log shows it without opening the full message.
            **review_console_metadata(spec.workflow),
            **figures,
            # The chain head after this batch, kept in Dagster's event log: `bosun audit verify`
            # finds a rewritten chain by it even when every hash was recomputed.
            **anchor_metadata(last_seq, head_hash),
        },
    )


def build_batch_checks(
    batch: BatchAssets,
    steps: BatchSteps,
    dead_letter_policy: DeadLetterPolicy,
    reconcile: Reconcile,
    acted_on_twice: ActedOnTwice,
    extra_checks: Sequence[OutcomeCheck] = (),
    limit_overrides: Optional[Callable[[], Mapping[str, float]]] = None,
) -> list[dg.AssetChecksDefinition]:
    """The standard checks of a workflow's batch: the guardrails held on its decisions;
    every event terminal, outcomes reconciled with the saga log and the targets, no entity
    acted on twice, dead letters within limits (and the workflow's extra checks) on its actions."""
    return [
        build_guardrail_checks(
            steps.decision.policy,
            batch.decisions,
            steps.partitions_def,
            limit_overrides or steps.decision.limit_overrides,
        ),
        build_outcome_checks(
            f"{steps.prefix}_outcome_checks",
            asset=batch.actions,
            partitions_def=steps.partitions_def,
            event_types=steps.event_types,
            dead_letter_policy=dead_letter_policy,
            reconcile=reconcile,
            acted_on_twice=acted_on_twice,
            extra_checks=extra_checks,
            preview_tag=PREVIEW_TAG,
        ),
    ]
