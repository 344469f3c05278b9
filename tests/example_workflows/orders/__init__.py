"""A toy workflow on the Workflow API: an order is placed -> its customer (one source) -> a
rule -> reserve the stock, then ship express only when the order asks (a conditional step)."""

from pathlib import Path

import dagster as dg
from pydantic import BaseModel

from guardrails.engine import load_policy
from orchestration.action.batch import ActionSpec
from orchestration.action.row_target import RowTarget
from orchestration.action.saga_executor import PlanStep, SagaExecutor, SagaPlan
from orchestration.action.saga_log import SagaLog
from orchestration.context.frame import base_record
from orchestration.core.batch_assets import BatchSteps, build_batch_assets, build_batch_checks
from orchestration.core.lineage import inbox_asset
from orchestration.core.workflows import Workflow
from orchestration.decision.batch import DecisionSpec, decide_batch
from orchestration.decision.confidence import Thresholds
from orchestration.decision.loop import LoopBounds
from orchestration.review.hooks import ReviewHooks
from orchestration.trigger.batching import BatchPolicy
from orchestration.trigger.dead_letters import DeadLetterPolicy
from orchestration.verification.outcome_checks import ActedOnTwice, Reconcile
from orchestration.verification.outcome_reconciliation import EventRecord, reconcile_batch_with_targets
from sensors.workflow_triggers import batch_sensors

NAME, PLACED, STEPS = "orders", "order.placed", ("reserve_stock", "ship_express")
CUSTOMERS = {"C1": {"blocked": False}, "C2": {"blocked": True}}  # the one source: a tiny CRM
STOCK = RowTarget("toy_order_effects")  # the target: a row per reservation and per express shipment


class OrderPlaced(BaseModel):
    order_id: str
    customer_id: str
    amount: float
    express: bool = False


def register(registry) -> None:
    registry.register(PLACED, 1, OrderPlaced)


def executor(resources, holder: str) -> SagaExecutor:
    url = resources["bosun_db"].resolved_url
    reserve, express = (STOCK.action(step, url, lambda it: it["order_id"]) for step in STEPS)
    # Express shipping only for the orders that ask: decided from the saga's logged params.
    steps = [PlanStep(reserve.name, reserve), PlanStep(express.name, express, after=(reserve.name,), when="express")]
    return SagaExecutor(SagaLog(url), NAME, SagaPlan(steps))


def assemble(call, frame) -> list[dict]:
    records = []
    for ev in frame.events:
        order, customer = ev.envelope.payload, CUSTOMERS.get(ev.envelope.payload["customer_id"])
        facts = {"customer_known": customer is not None, "blocked": bool(customer and customer["blocked"])}
        records.append({**base_record(ev), "order": order, "facts": {**facts, "amount": order["amount"]}})
    return records


def reason(requests) -> list[dict]:
    """The rule: ship; large orders are less sure (and go to a person)."""
    sure = {r.item["key"]: 0.95 if r.item["facts"]["amount"] < 500 else 0.6 for r in requests}
    return [{**r.item, "decision": "ship", "probability": sure[r.item["key"]], "model": "local"} for r in requests]


def event_record(row: dict) -> EventRecord:
    shipped = row["status"] == "done" and (row["outcome"] or {}).get("decision") == "ship"
    return EventRecord(row["idempotency_key"], row["status"], row["payload"]["order_id"], shipped)


def reconcile(batch, r):
    url = r["bosun_db"].resolved_url
    found = lambda keys, events: STOCK.effects(url, keys, [e.entity for e in events])  # noqa: E731
    return reconcile_batch_with_targets(batch.key, r["bosun_db"], [PLACED], STEPS, event_record, found)


SPEC = DecisionSpec(
    load_policy(Path(__file__).with_name("policy.yaml")), Thresholds(act=0.8, ask=0.5), LoopBounds(), {"ship"}
)
ACTIONS = ActionSpec(
    NAME,
    saga_params=lambda d: {"key": d["key"], **d["order"]},
    done_outcome=lambda key: {"decision": "ship"},
    done_reason="shipped",
    decision_fields=("facts", "order"),
    review_proposal=lambda d: {"order": d["order"]},
    acting_label="ship",
)
batches = dg.DynamicPartitionsDefinition(name="order_batches")
inbox = inbox_asset("order_inbox", NAME, [PLACED])
decide = lambda call, contexts, seconds: decide_batch(contexts, reason, SPEC, seconds=seconds)  # noqa: E731
steps = BatchSteps(NAME, "order", [PLACED], batches, inbox, {}, assemble, decide, SPEC, ACTIONS, executor)
batch = build_batch_assets(steps)
checks = build_batch_checks(
    batch,
    steps,
    DeadLetterPolicy(attempts=2, backoff_s=0.1, max_open=10, max_oldest_age_s=3600),
    Reconcile("orders_reconcile_with_saga_log_and_stock", "Outcomes, sagas and stock rows agree.", reconcile),
    ActedOnTwice(
        "no_order_reserved_twice",
        "No order has two live reservations.",
        lambda r: STOCK.acted_twice(r["bosun_db"].resolved_url, "reserve_stock"),
        "orders_reserved_twice",
    ),
)
hooks = ReviewHooks.from_actions([PLACED], ("ship", "refuse"), ACTIONS, executor, refused_label="refuse")
policy = BatchPolicy(max_events=50, max_wait_seconds=0, min_events=1)
sensors = batch_sensors(steps, batch.job, policy, sagas=hooks)  # order_inbox_sensor, order_recovery_sensor

workflow = Workflow(
    name=NAME,
    event_types=[PLACED],
    register_payloads=register,
    assets=[inbox, *batch.assets],
    asset_checks=checks,
    jobs=[batch.job],
    sensors=sensors,
    sagas=hooks,
    reviews=hooks,
)
