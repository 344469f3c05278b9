"""The invoice payment saga: post the liability, schedule the payment, tell the vendor.

Two action types against the ERP and one against the notification outbox, each
idempotent by a key derived from the event, each with its compensation (reverse, cancel,
retract) and a read that verifies it; the checks that must hold before the first step;
the entities a run leases; the approval rule.
"""

from __future__ import annotations

from decimal import Decimal

from assets.invoices.erp import ERPResource
from assets.invoices.workflow import PO_TOLERANCE, WORKFLOW, dead_letter_policy
from orchestration.action.actions import ActionType, RetryPolicy, verified_by_keys
from orchestration.action.approval import amount_above, limit_from_env
from orchestration.action.batch import action_key
from orchestration.action.batch import record_settled as settle
from orchestration.action.leases import Leases
from orchestration.action.rate_limit import overriding, rate_from_env
from orchestration.action.saga_executor import PlanStep, Refusal, SagaExecutor, SagaPlan
from orchestration.action.saga_log import SagaLog
from orchestration.review.queue import ReviewQueue
from resources.outbox import NotificationOutbox

ERP_TARGET = "erp"
OUTBOX_TARGET = "outbox"
# Queueing a notice is one insert into the outbox, so a short timeout; a notice is harmless
# to retry and not worth dead-lettering a paid invoice over a blip, so more patient
# backoff than the ERP's (still ending within the run).
NOTIFY_TIMEOUT_S = 10.0
NOTIFY_RETRY = RetryPolicy(attempts=4, initial_s=0.5, max_s=5.0, jitter_s=0.25)


def payment_params(key: str, invoice: dict, po_amount=None) -> dict:
    """One payment saga's parameters (kept in the saga log, so recovery needs nothing else)."""
    return {
        "key": key,
        "invoice_id": invoice["invoice_id"],
        "vendor_id": invoice["vendor_id"],
        "po_number": invoice["po_number"],
        "amount": invoice["amount"],
        "currency": invoice["currency"],
        "due_on": invoice["due_on"],
        "po_amount": po_amount,
    }


def payment_notice(item: dict) -> dict:
    """What the vendor is told once its payment is scheduled (an outbox message)."""
    return {
        "key": item["key"],
        "workflow": WORKFLOW,
        "recipient_type": "vendor",
        "recipient": item["vendor_id"],
        "entity": item["invoice_id"],
        "subject": f"Payment scheduled for invoice {item['invoice_id']}",
        "body": {
            "invoice_id": item["invoice_id"],
            "po_number": item["po_number"],
            "amount": str(item["amount"]),
            "currency": item["currency"],
            "due_on": str(item["due_on"]),
            "payment_key": action_key(item["saga_id"], "schedule_payment"),
        },
    }


def payment_plan(
    erp: ERPResource,
    outbox: NotificationOutbox | None = None,
    timeout_s: float = 30.0,
    retry: RetryPolicy | None = None,
    rate: float | None = None,
    *,
    notify_timeout_s: float | None = None,
    notify_retry: RetryPolicy | None = None,
    notify_rate: float | None = None,
) -> SagaPlan:
    # The workflow's retry budget: after it, the invoice is dead-lettered (workflow.py).
    retry = retry or RetryPolicy(attempts=dead_letter_policy.attempts, initial_s=dead_letter_policy.backoff_s)
    outbox = outbox if outbox is not None else NotificationOutbox()

    def action(name, do, undo, live, **kw):
        kw = {"timeout_s": timeout_s, "retry": retry, "target": ERP_TARGET, "rate_limit": rate, **kw}
        return ActionType(name, do=do, compensate=undo, verify=verified_by_keys(live), **kw)

    post = action("post_ledger_entry", erp.post_ledger_entries, erp.reverse_ledger_entries, erp.live_ledger_keys)
    pay = action("schedule_payment", erp.schedule_payments, erp.cancel_payments, erp.live_payment_keys)
    notify = action(
        "notify_vendor",
        lambda items: outbox.queue_notifications([payment_notice(it) for it in items]),
        lambda items: outbox.retract_notifications([payment_notice(it) for it in items]),
        outbox.live_notification_keys,
        target=OUTBOX_TARGET,
        timeout_s=notify_timeout_s or NOTIFY_TIMEOUT_S,
        retry=notify_retry or NOTIFY_RETRY,
        rate_limit=notify_rate,
    )
    return SagaPlan(
        [
            PlanStep(post.name, post),
            PlanStep(pay.name, pay, after=(post.name,)),
            PlanStep(notify.name, notify, after=(pay.name,)),
        ]
    )


def entities(params: dict) -> list[str]:
    """What two runs must not act on at once: the invoice and its purchase order."""
    return [f"invoice:{params['vendor_id']}:{params['invoice_id']}", f"po:{params['po_number']}"]


# Prerequisites that fail for a business reason are decisions: the same hard rules the
# guardrails applied at decision time (not_already_paid -> reject, vendor_must_be_active ->
# reject, purchase_order_must_exist_and_be_open and amount_within_po_tolerance -> hold), met
# at execution time because a concurrent batch paid the invoice or the PO changed meanwhile.
# The event ends `done` with that decision and the reason, audited; no dead letter. What a
# person must look at (a vendor or PO the ERP no longer knows, no bank account) stays a failure.
REFUSAL_DECISIONS = {
    "already_paid": "reject",
    "vendor_inactive": "reject",
    "po_not_open": "hold",
    "po_exhausted": "hold",
}


def prerequisites(erp: ERPResource):
    """Checked live before the first step: vendor active with a bank account, PO open with
    enough left (counting earlier sagas of the same call against it). Business refusals
    are `Refusal`s (see REFUSAL_DECISIONS); a plain string is a failure for a person."""

    def check(items: list[dict]) -> dict[str, str | Refusal]:
        vendors, pos = erp.master_data_for([it["vendor_id"] for it in items], [it["po_number"] for it in items])
        paid = erp.paid_per_po(sorted(pos))
        # Read under the leases: a concurrent batch may have paid this invoice (under
        # another event's key) after this batch read its context.
        paid_invoices = erp.paid_invoices(sorted({it["invoice_id"] for it in items}))
        committed: dict[str, Decimal] = {}
        refused = {}
        for it in items:
            v, po, amount = vendors.get(it["vendor_id"]), pos.get(it["po_number"]), Decimal(str(it["amount"]))
            own = action_key(it["key"], "schedule_payment")
            others = [k for k in paid_invoices.get((it["vendor_id"], it["invoice_id"]), []) if k != own]
            if others:
                refused[it["key"]] = Refusal(
                    "already_paid", f"invoice {it['invoice_id']} is already paid ({others[0]})"
                )
            elif v is None:
                refused[it["key"]] = f"vendor {it['vendor_id']} does not exist"
            elif not v["active"]:
                refused[it["key"]] = Refusal("vendor_inactive", f"vendor {it['vendor_id']} is inactive")
            elif not v.get("iban"):
                refused[it["key"]] = f"vendor {it['vendor_id']} has no bank account"
            elif po is None:
                refused[it["key"]] = f"purchase order {it['po_number']} does not exist"
            elif po["status"] != "open":
                refused[it["key"]] = Refusal("po_not_open", f"purchase order {it['po_number']} is {po['status']}")
            else:
                left = (
                    Decimal(str(po["amount"])) * (1 + PO_TOLERANCE)
                    - paid.get(it["po_number"], Decimal(0))
                    - committed.get(it["po_number"], Decimal(0))
                )
                if amount > left:
                    refused[it["key"]] = Refusal(
                        "po_exhausted", f"purchase order {it['po_number']} has {left:.2f} left, invoice is {amount}"
                    )
                else:
                    committed[it["po_number"]] = committed.get(it["po_number"], Decimal(0)) + amount
                    paid_invoices.setdefault((it["vendor_id"], it["invoice_id"]), []).append(own)
        return refused

    return check


# BOSUN_INVOICE_APPROVAL_LIMIT: payments above it wait for a person's approval.
APPROVAL_LIMIT = "BOSUN_INVOICE_APPROVAL_LIMIT"
# Calls per second the ERP, and notices per second the outbox's relay, accept from all runs together.
ERP_RATE_LIMIT, OUTBOX_RATE_LIMIT = "BOSUN_ERP_RATE_LIMIT", "BOSUN_OUTBOX_RATE_LIMIT"


def payment_executor(
    erp: ERPResource,
    db_url: str,
    holder: str,
    *,
    rate: float | None = None,
    limit: Decimal | None = None,
    lease_wait_s: float = 10.0,
    plan: SagaPlan | None = None,
    outbox: NotificationOutbox | None = None,
    log: SagaLog | None = None,
) -> SagaExecutor:
    # `rate` overrides the plan's ERP rate (0: no limit on any target); by default the plan
    # declares BOSUN_ERP_RATE_LIMIT and BOSUN_OUTBOX_RATE_LIMIT.
    plan = plan or payment_plan(
        erp, outbox, rate=rate_from_env(ERP_RATE_LIMIT), notify_rate=rate_from_env(OUTBOX_RATE_LIMIT)
    )
    return SagaExecutor(
        log or SagaLog(db_url),
        WORKFLOW,
        plan,
        limiters=overriding(db_url, ERP_TARGET, rate, (ERP_TARGET, OUTBOX_TARGET)),
        leases=Leases(db_url, holder),
        entities=entities,
        prerequisites=prerequisites(erp),
        approval=amount_above(limit if limit is not None else limit_from_env(APPROVAL_LIMIT)),
        review=ReviewQueue(db_url),
        lease_wait_s=lease_wait_s,
    )


def saga_executor(resources, holder: str) -> SagaExecutor:
    """The workflow's executor for `bosun saga ...` and `bosun review approve`."""
    return payment_executor(resources["erp"], resources["bosun_db"].resolved_url, holder, outbox=resources["outbox"])


def record_settled(resources, outcome, note: str, batch_id: str | None = None, extra: dict | None = None) -> int:
    """After an approval or a recovery outside a batch run: the events' terminal states."""
    from assets.invoices.actions import ACTIONS

    return settle(resources, outcome, note, ACTIONS, batch_id, extra)
