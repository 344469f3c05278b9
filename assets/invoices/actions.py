"""Action layer of the invoice workflow: plan, execute as sagas, record every outcome."""

import dagster as dg

from assets.invoices.context import action_key
from assets.invoices.erp import ERPResource
from assets.invoices.metrics import observe_batch
from assets.invoices.payment_saga import payment_executor, payment_params, refusal_audit, refusal_state
from assets.invoices.workflow import WORKFLOW, invoice_batches
from orchestration.action.saga_executor import BatchOutcome
from orchestration.audit.anchors import anchor_metadata
from orchestration.audit.chain import AuditEntry
from orchestration.core import clock
from orchestration.core.lineage import layer_group
from orchestration.decision.guardrail_checks import activation_counts
from orchestration.decision.loop import final_pass_fields, pass_entries
from orchestration.review.queue import review_console_metadata
from orchestration.trigger.inbox import RECEIVED
from resources.chat_model import ChatModel
from resources.database import BosunDatabase
from resources.io_managers import IN_RUN_IO_MANAGER
from resources.outbox import NotificationOutbox


def plan(decisions: list[dict]) -> list[dict]:
    """The payment plan: one item per approved invoice, with keys derived from the event."""
    items = []
    for d in decisions:
        if d["route"] != "act":
            continue
        items.append(payment_params(d["key"], d["invoice"], d["context_used"].get("po_amount")))
    return items


PREVIEW_TAG = "bosun/preview"


def execute(
    decisions: list[dict],
    erp: ERPResource,
    db_url: str,
    batch_id: str,
    holder: str,
    preview: bool = False,
    outbox: NotificationOutbox | None = None,
) -> BatchOutcome:
    """The batch's payment sagas; a saga already in the log is resumed from it, whatever a
    recomputed decision says, so a replay after a crash finishes what was started."""
    executor = payment_executor(erp, db_url, holder, outbox=outbox)
    items = plan(decisions)
    if preview:
        return executor.run(items, batch_id, preview=True)
    planned = {it["key"] for it in items}
    logged = executor.log.load([d["key"] for d in decisions if d["key"] not in planned])
    return executor.run(items + [row["params"] for row in logged.values()], batch_id)


def outcomes(decisions: list[dict], sagas: BatchOutcome) -> list[dict]:
    """Exactly one terminal state per event; none yet for a saga deferred to a later run."""
    states = []
    done = set(sagas.done)
    for d in decisions:
        k = d["key"]
        if k in sagas.deferred or k in sagas.unfinished:
            continue  # stays "received": the batch's next run (or `bosun saga recover`) finishes it
        if k in sagas.awaiting_approval:
            states.append(
                {"key": k, "status": "escalated", "reason": f"awaiting approval: {sagas.awaiting_approval[k]}"}
            )
        elif k in sagas.refused:  # a business reason at execution time: a decision, not a dead letter
            states.append(refusal_state(k, sagas.refused[k]))
        elif k not in done and k not in sagas.failed and d["route"] == "escalate":
            states.append({"key": k, "status": "escalated", "reason": d["reason"]})
        elif k not in done and k not in sagas.failed and d["route"] == "record":
            states.append(
                {"key": k, "status": "done", "reason": d["reason"], "outcome": {"decision": d["final_decision"]}}
            )
        elif k in sagas.failed:
            f = sagas.failed[k]
            if f.get("failed_step") == "approval":  # a reviewer refused the payment: nothing acted
                states.append({"key": k, "status": "done", "reason": f["error"], "outcome": {"decision": "reject"}})
            elif f.get("compensation_error"):
                # A half-undone saga needs a person, not a retry.
                states.append(
                    {
                        "key": k,
                        "status": "escalated",
                        "reason": f"rollback failed after {f['failed_step']}: {f['compensation_error']}",
                    }
                )
            else:
                tries = f.get("attempts")
                states.append(
                    {
                        "key": k,
                        "status": "dead_lettered",
                        "attempts": tries or 1,
                        "reason": f"{f['failed_step']} failed"
                        + (f" after {tries} attempt(s)" if tries else "")
                        + f": {f['error']}; compensated: {', '.join(f['compensated']) or 'nothing to undo'}",
                    }
                )
        else:
            states.append(
                {
                    "key": k,
                    "status": "done",
                    "reason": "paid",
                    "outcome": {"decision": "approve", "payment_key": action_key(k, "schedule_payment")},
                }
            )
    return states


def audit_entries(decisions: list[dict], sagas: BatchOutcome, states: list[dict], batch_id: str) -> list[AuditEntry]:
    """Per event: the decision with what it was made from, every action, the end state."""
    entries = []
    steps_by_key: dict[str, list[dict]] = {}
    for row in sagas.log:
        steps_by_key.setdefault(row["key"], []).append(row)
    state_by_key = {s["key"]: s for s in states}
    for d in decisions:
        k = d["key"]
        # Every pass of the decision loop before the last is its own record; the last is this one.
        entries += pass_entries(k, d.get("decision_loop"), batch_id)
        entries.append(
            AuditEntry(
                "decision",
                k,
                {
                    "entity_key": d["entity_key"],
                    "event": d["event"],
                    "context_hash": d["context_hash"],
                    "context_used": d["context_used"],
                    "model": d["model"],
                    "model_version": d["model_version"],
                    "prompt_version": d["prompt_version"],
                    "decision_type": d["decision_type"],
                    "route_reason": d["route_reason"],
                    "latency_s": d["latency_s"],
                    "input_tokens": d["input_tokens"],
                    "output_tokens": d["output_tokens"],
                    "cost_usd": d["cost_usd"],
                    "cache_hit": d["cache_hit"],
                    "proposed": d["decision"],
                    "probabilities": d["probabilities"],
                    "confidence": d["confidence"],
                    "confidence_breakdown": d["confidence_breakdown"],
                    "calibrator_version": d["calibrator_version"],
                    "re_retrieved": d.get("re_retrieved", False),
                    "guardrails": d["guardrails"],
                    "decision": d["final_decision"],
                    "route": d["route"],
                    "reason": d["reason"],
                    # The facts the model and the guardrails read (no personal data), as they were, not
                    # as the ERP says later: retraining, the decision report and `bosun replay` learn
                    # from them; replay also re-decides from the invoice. It is the context layer's guarded
                    # copy: every untrusted field (note, line-item descriptions) already redacted.
                    "facts": d["facts"],
                    "invoice": d["invoice"],
                    **final_pass_fields(d.get("decision_loop")),
                },
                batch_id,
            )
        )
        for step in steps_by_key.get(k, []):
            kind = "compensation" if step["status"] in ("compensated", "compensation_failed") else "action"
            entries.append(
                AuditEntry(
                    kind,
                    k,
                    {
                        "step": step["step"],
                        "status": step["status"],
                        "error": step["error"],
                        "action_key": action_key(k, step["step"]),
                    },
                    batch_id,
                )
            )
        s = state_by_key.get(k)
        if s is None:
            continue
        entries.append(
            AuditEntry("outcome", k, {"status": s["status"], "reason": s["reason"], **refusal_audit(s)}, batch_id)
        )
    # Per guardrail, how often it fired in this batch: the audit answers "how often did
    # rule X stop a payment last month" without re-reading every decision.
    entries.append(AuditEntry("guardrail_activations", batch_id, activation_counts(decisions), batch_id))
    return entries


# ---- the graph-backed asset ---------------------------------------------------------------


@dg.op(out=dg.Out(io_manager_key=IN_RUN_IO_MANAGER))
def plan_payments(invoice_decisions: list[dict]) -> dict:
    return {"decisions": invoice_decisions, "plan": plan(invoice_decisions)}


@dg.op(out=dg.Out(io_manager_key=IN_RUN_IO_MANAGER))
def execute_payment_sagas(
    context: dg.OpExecutionContext,
    planned: dict,
    erp: ERPResource,
    bosun_db: BosunDatabase,
    outbox: NotificationOutbox,
    llm: ChatModel,
) -> dg.Output[dict]:
    """Run the sagas, then record every event's outcome: review queue and audit first, the
    inbox state last, so a run that dies in between leaves the events "received" and the
    replay redoes them idempotently."""
    decisions, batch_id = planned["decisions"], context.partition_key
    preview = context.run.tags.get(PREVIEW_TAG) == "true"
    sagas = execute(decisions, erp, bosun_db.resolved_url, batch_id, context.run_id, preview, outbox)
    acted_at = clock.now()
    if preview:  # nothing executes: the plans are the run's metadata
        return dg.Output(
            {"batch": batch_id, "preview": True, "plans": len(sagas.preview)},
            metadata={
                "preview": True,
                "planned_payments": len(sagas.preview),
                "plans": dg.MetadataValue.json(sagas.preview[:100]),
            },
        )
    states = outcomes(decisions, sagas)
    bosun_db.review_queue().submit(
        WORKFLOW,
        [
            {
                "key": d["key"],
                "entity_key": d["entity_key"],
                "confidence": d["confidence"],
                "reason": d["reason"],
                "proposal": {
                    "decision": d["final_decision"],
                    "proposed": d["decision"],
                    "invoice": d["invoice"],
                    "guardrails": d["guardrails"],
                    "po_amount": d["context_used"].get("po_amount"),
                },
            }
            for d in decisions
            if d["route"] == "escalate"
        ],
        batch_id,
    )
    last_seq, head_hash = bosun_db.audit().append_head(audit_entries(decisions, sagas, states, batch_id))
    # Only events still "received": a reviewer may already have answered an escalation
    # submitted above, and that answer stands.
    bosun_db.inbox().set_states(states, batch_id, only_from=(RECEIVED,))
    by_status: dict[str, int] = {}
    for s in states:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    # The sagas' counts are zero in most batches, and `paid` is the success rate again: in
    # the details, not among the plotted series.
    saga_counts = {
        "planned_payments": len(planned["plan"]),
        "paid": len(sagas.done),
        "saga_failures": len(sagas.failed),
        "refused_at_execution": len(sagas.refused),
        "deferred": len(sagas.deferred),
        "awaiting_approval": len(sagas.awaiting_approval),
        "in_doubt": len(sagas.unfinished),
        "compensated": sum(1 for f in sagas.failed.values() if f["compensated"]),
    }
    figures = observe_batch(
        context,
        decisions,
        states,
        bosun_db.metrics(),
        acted_at,
        llm_enabled=llm.enabled,
        details={"states": dict(sorted(by_status.items())), "sagas": saga_counts},
    )
    summary = {
        "batch": batch_id,
        "events": len(states),
        "by_status": by_status,
        "paid": len(sagas.done),
        "saga_failures": len(sagas.failed),
        "audit_head_seq": last_seq,
    }
    return dg.Output(
        summary,
        metadata={
            # Where this batch's escalations are answered, when a reviewer console is known;
            # first, so the run's event log shows it without opening the full message.
            **review_console_metadata(WORKFLOW),
            **figures,
            # The chain head after this batch, kept in Dagster's event log: `bosun audit verify`
            # finds a rewritten chain by it even when every hash was recomputed.
            **anchor_metadata(last_seq, head_hash),
        },
    )


@dg.graph_asset(partitions_def=invoice_batches, group_name=layer_group(WORKFLOW, "action"), kinds={"saga"})
def invoice_actions(invoice_decisions: list[dict]) -> dict:
    """Payments made for the batch's approved invoices (ledger entry, payment, notice to
    the vendor), and the terminal state of every event in the batch."""
    return execute_payment_sagas(plan_payments(invoice_decisions))
