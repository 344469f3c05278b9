"""Action layer of the invoice workflow: plan, execute as sagas, record every outcome."""


from decimal import Decimal

import dagster as dg

from orchestration.audit import AuditEntry
from orchestration.saga import SagaOutcome, SagaStep, run_sagas
from resources.database import BosunDatabase
from resources.erp import ERPResource

from assets.invoices.context import action_key
from assets.invoices.workflow import PO_TOLERANCE, WORKFLOW, dead_letter_policy, invoice_batches


def plan(decisions: list[dict]) -> list[dict]:
    """The payment plan: one item per approved invoice, with keys derived from the event."""
    items = []
    for d in decisions:
        if d["route"] != "act":
            continue
        inv = d["invoice"]
        items.append({"key": d["key"], "invoice_id": inv["invoice_id"], "vendor_id": inv["vendor_id"],
                      "po_number": inv["po_number"], "amount": inv["amount"], "currency": inv["currency"],
                      "due_on": inv["due_on"], "po_amount": d["context_used"].get("po_amount")})
    return items


def recheck(items: list[dict], erp: ERPResource) -> tuple[list[dict], dict[str, dict]]:
    """Under the workflow's lease, against the ERP as it is now: drop what a concurrent
    batch has paid since this batch read its context. -> (still to pay, key -> state)."""
    if not items:
        return [], {}
    paid = erp.paid_invoices(sorted({it["invoice_id"] for it in items}))
    paid_po = erp.paid_per_po(sorted({it["po_number"] for it in items}))
    keep, conflicts = [], {}
    for it in items:
        others = [k for k in paid.get((it["vendor_id"], it["invoice_id"]), [])
                  if k != action_key(it["key"], "schedule_payment")]
        amount = Decimal(str(it["amount"]))
        already = paid_po.get(it["po_number"], Decimal(0))
        if others:
            conflicts[it["key"]] = {"status": "done", "reason": f"already paid by {others[0]} (concurrent batch)",
                                    "outcome": {"decision": "reject"}}
        elif it["po_amount"] is not None and already + amount > Decimal(str(it["po_amount"])) * (1 + PO_TOLERANCE):
            conflicts[it["key"]] = {"status": "escalated",
                                    "reason": f"PO {it['po_number']} no longer covers {amount} (paid since: {already})"}
        else:
            keep.append(it)
            paid.setdefault((it["vendor_id"], it["invoice_id"]), []).append(action_key(it["key"], "schedule_payment"))
            paid_po[it["po_number"]] = already + amount
    return keep, conflicts


def payment_steps(erp: ERPResource) -> list[SagaStep]:
    """Post the liability, then schedule the payment; each undone in reverse on failure."""
    def keyed(items, step):
        return [{**it, "key": action_key(it["key"], step)} for it in items]

    def unkeyed(errors: dict[str, str], step: str) -> dict[str, str]:
        prefix = f"{step}:"
        return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in errors.items()}

    budget = {"attempts": dead_letter_policy.attempts, "backoff_s": dead_letter_policy.backoff_s}
    return [
        SagaStep("post_ledger_entry",
                 do=lambda items: unkeyed(erp.post_ledger_entries(keyed(items, "post_ledger_entry")), "post_ledger_entry"),
                 compensate=lambda items: erp.reverse_ledger_entries(keyed(items, "post_ledger_entry")), **budget),
        SagaStep("schedule_payment",
                 do=lambda items: unkeyed(erp.schedule_payments(keyed(items, "schedule_payment")), "schedule_payment"),
                 compensate=lambda items: erp.cancel_payments(keyed(items, "schedule_payment")), **budget),
    ]


def execute(items: list[dict], erp: ERPResource) -> SagaOutcome:
    return run_sagas(items, payment_steps(erp))


def outcomes(decisions: list[dict], sagas: SagaOutcome, conflicts: dict[str, dict] | None = None) -> list[dict]:
    """Exactly one terminal state per event."""
    states = []
    for d in decisions:
        k = d["key"]
        if conflicts and k in conflicts:
            states.append({"key": k, **conflicts[k]})
        elif d["route"] == "escalate":
            states.append({"key": k, "status": "escalated", "reason": d["reason"]})
        elif d["route"] == "record":
            states.append({"key": k, "status": "done", "reason": d["reason"],
                           "outcome": {"decision": d["final_decision"]}})
        elif k in sagas.failed:
            f = sagas.failed[k]
            if f.get("compensation_error"):
                # A half-undone saga needs a person, not a retry.
                states.append({"key": k, "status": "escalated",
                               "reason": f"rollback failed after {f['failed_step']}: {f['compensation_error']}"})
            else:
                states.append({"key": k, "status": "dead_lettered", "attempts": f["attempts"],
                               "reason": f"{f['failed_step']} failed after {f['attempts']} attempt(s): "
                                         f"{f['error']}; compensated: {', '.join(f['compensated']) or 'nothing to undo'}"})
        else:
            states.append({"key": k, "status": "done", "reason": "paid",
                           "outcome": {"decision": "approve", "payment_key": action_key(k, "schedule_payment")}})
    return states


def audit_entries(decisions: list[dict], sagas: SagaOutcome, states: list[dict], batch_id: str) -> list[AuditEntry]:
    """Per event: the decision with what it was made from, every action, the end state."""
    entries = []
    steps_by_key: dict[str, list[dict]] = {}
    for row in sagas.log:
        steps_by_key.setdefault(row["key"], []).append(row)
    state_by_key = {s["key"]: s for s in states}
    for d in decisions:
        k = d["key"]
        entries.append(AuditEntry("decision", k, {
            "entity_key": d["entity_key"], "event": d["event"], "context_hash": d["context_hash"],
            "context_used": d["context_used"], "model": d["model"],
            "model_version": d["model_version"], "prompt_version": d["prompt_version"],
            "proposed": d["decision"], "probabilities": d["probabilities"], "confidence": d["confidence"],
            "guardrails": d["guardrails"], "decision": d["final_decision"], "route": d["route"],
            "reason": d["reason"]}, batch_id))
        for step in steps_by_key.get(k, []):
            kind = "compensation" if step["status"] in ("compensated", "compensation_failed") else "action"
            entries.append(AuditEntry(kind, k, {"step": step["step"], "status": step["status"],
                                                "error": step["error"],
                                                "action_key": action_key(k, step["step"])}, batch_id))
        s = state_by_key[k]
        entries.append(AuditEntry("outcome", k, {"status": s["status"], "reason": s["reason"]}, batch_id))
    return entries


# ---- the graph-backed asset ---------------------------------------------------------------

@dg.op
def plan_payments(invoice_decisions: list[dict]) -> dict:
    return {"decisions": invoice_decisions, "plan": plan(invoice_decisions)}


@dg.op
def execute_payment_sagas(context: dg.OpExecutionContext, planned: dict, erp: ERPResource,
                          bosun_db: BosunDatabase) -> dg.Output[dict]:
    """Run the sagas, then record every event's outcome: review queue and audit first, the
    inbox state last, so a run that dies in between leaves the events "received" and the
    replay redoes them idempotently."""
    decisions, batch_id = planned["decisions"], context.partition_key
    with bosun_db.leases().hold(f"{WORKFLOW}:actions", holder=context.run_id):
        to_pay, conflicts = recheck(planned["plan"], erp)
        sagas = execute(to_pay, erp)
    states = outcomes(decisions, sagas, conflicts)
    bosun_db.review_queue().submit(WORKFLOW, [
        {"key": d["key"], "entity_key": d["entity_key"], "confidence": d["confidence"], "reason": d["reason"],
         "proposal": {"decision": d["final_decision"], "proposed": d["decision"], "invoice": d["invoice"],
                      "guardrails": d["guardrails"]}}
        for d in decisions if d["route"] == "escalate"], batch_id)
    last_seq = bosun_db.audit().append(audit_entries(decisions, sagas, states, batch_id))
    bosun_db.inbox().set_states(states, batch_id)
    by_status: dict[str, int] = {}
    for s in states:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    summary = {"batch": batch_id, "events": len(states), "by_status": by_status,
               "paid": len(sagas.done), "saga_failures": len(sagas.failed), "audit_head_seq": last_seq}
    return dg.Output(summary, metadata={
        "events": len(states), "planned_payments": len(planned["plan"]), "paid": len(sagas.done),
        "concurrent_conflicts": len(conflicts),
        "saga_failures": len(sagas.failed),
        "compensated": sum(1 for f in sagas.failed.values() if f["compensated"]),
        **{f"state_{k}": v for k, v in sorted(by_status.items())}, "audit_head_seq": last_seq})


@dg.graph_asset(partitions_def=invoice_batches, group_name="invoice_workflow")
def invoice_actions(invoice_decisions: list[dict]) -> dict:
    """Payments made for the batch's approved invoices (ledger entry, then payment), and
    the terminal state of every event in the batch."""
    return execute_payment_sagas(plan_payments(invoice_decisions))
