"""Support-ticket triage, declared once on the Workflow API: a ticket arrives -> its customer
(CRM), earlier tickets and help-centre articles -> calibrated text models for team and
priority, the LLM when they are unsure, a reply grounded in an article -> the guardrails ->
assign, set the priority and, only when the decision says so, send the reply (a saga)."""

from pathlib import Path

import dagster as dg

from assets.tickets import context, feedback, reasoning
from assets.tickets.systems import EFFECTS, TicketSystems
from guardrails.engine import load_policy
from orchestration.action.batch import ActionSpec
from orchestration.action.saga_executor import PlanStep, SagaExecutor, SagaPlan
from orchestration.action.saga_log import SagaLog
from orchestration.core.batch_assets import BatchSteps, build_batch_assets, build_batch_checks
from orchestration.core.lineage import inbox_asset
from orchestration.core.workflows import SampleHooks, Workflow, lazy
from orchestration.decision.batch import DecisionSpec, decide_batch
from orchestration.decision.confidence import Thresholds
from orchestration.decision.loop import LoopBounds
from orchestration.review.hooks import ReviewHooks
from orchestration.trigger.batching import BatchPolicy
from orchestration.trigger.dead_letters import DeadLetterPolicy
from orchestration.trigger.delivery import DeliveryPolicy
from orchestration.verification.delayed_outcomes import build_delayed_outcome_asset
from orchestration.verification.outcome_checks import ActedOnTwice, OutcomeCheck, Reconcile, Verdict
from orchestration.verification.outcome_reconciliation import EventRecord, reconcile_batch_with_targets
from resources.defaults import env_or_none
from sensors.workflow_triggers import batch_sensors, context_refresh

NAME, EVENTS, STEPS = "tickets", [context.CREATED, context.UPDATED], ("assign", "set_priority", "send_reply")
ACTING = ("route", "route_and_reply")


def reply(it: dict) -> dict:
    body = {"ticket_id": it["ticket_id"], "reply": it["reply"], "articles": " ".join(it["articles"])}
    to = {"recipient": it["customer_id"], "workflow": NAME, "recipient_type": "customer", "entity": it["ticket_id"]}
    return {**to, "subject": f"Re: your ticket {it['ticket_id']}", "body": body}


def executor(resources, holder: str) -> SagaExecutor:
    desk: TicketSystems = resources["tickets"]
    steps = [
        PlanStep("assign", desk.action("assign", "team", "team", None)),
        PlanStep("set_priority", desk.action("set_priority", "priority", "priority", "previous_priority"), ("assign",)),
        # Only when the decision says so; a reply already dispatched is retracted with a correction.
        PlanStep("send_reply", resources["outbox"].step("send_reply", reply), ("set_priority",), when="send_reply"),
    ]
    # A ticket assigned by an earlier event's saga (an update after its first triage) is not assigned again.
    held = EFFECTS.held_elsewhere(desk.resolved_url, "assign", lambda it: it["ticket_id"], "already_assigned")
    return SagaExecutor(SagaLog(resources["bosun_db"].resolved_url), NAME, SagaPlan(steps), prerequisites=held)


def saga_params(d: dict) -> dict:
    # An approved escalation's proposal says it; a batch's decision says it by its final decision.
    sends = d["send_reply"] if "send_reply" in d else d["final_decision"] == "route_and_reply"
    kept = {k: d[k] for k in ("key", "team", "priority", "reply", "articles")}
    return {**kept, **d["ticket"], "previous_priority": d["previous_priority"], "send_reply": sends}


def event_record(row: dict) -> EventRecord:
    outcome = row["outcome"] or {}
    acted = row["status"] == "done" and outcome.get("decision") in ACTING and not outcome.get("refusal")
    return EventRecord(row["idempotency_key"], row["status"], row["payload"]["ticket_id"], acted)


def reconcile(batch, r):
    def effects(keys, events):
        return EFFECTS.effects(r["tickets"].resolved_url, keys, [e.entity for e in events]) + r["outbox"].effects(keys)

    return reconcile_batch_with_targets(batch.key, r["bosun_db"], EVENTS, STEPS, event_record, effects)


def replies_cite_articles(batch, r) -> Verdict:
    """Every reply live in the outbox names, in its text, an article the help centre has."""
    known = {p.stem for p in context.ARTICLES.glob("*.md")}
    cites = lambda b: any(f"[{a}]" in b.get("reply", "") for a in b.get("articles", "").split() if a in known)  # noqa: E731
    bad = [k for k, body in r["outbox"].live_bodies(NAME).items() if not cites(body)]
    return Verdict(not bad, {"uncited_replies": len(bad), "examples": dg.MetadataValue.json(bad[:10])})


def decide(call, contexts, seconds):
    r = call.resources
    reasoner = reasoning.Reasoner(r["local_model"], r["llm"], r["bosun_db"].llm_ledger())
    # The broader search builds its own index (milliseconds for the articles), only when asked.
    more = reasoning.read_more(r["llm"].enabled, context.build_index, 5)
    out = decide_batch(contexts, reasoner.reason, SPEC, reasoning.load_calibrator(r["local_model"]), more, seconds)
    call.metadata.update(reasoner.figures())
    return out


SPEC = DecisionSpec(load_policy(NAME), Thresholds(act=0.7, ask=0.45), LoopBounds(), set(ACTING))
ACTIONS = ActionSpec(
    NAME,
    saga_params=saga_params,
    done_outcome=lambda key: {"decision": "route"},
    done_reason="routed",
    refusal_decisions={"already_assigned": "route"},
    decision_fields=("ticket", "team", "priority", "articles", "outputs", "facts"),
    # Approving an escalation routes the ticket as proposed, and sends the reply if the decision had one.
    review_proposal=lambda d: {**saga_params(d), "decision": "route", "ticket": d["ticket"]},
    acting_label="route",
)
batches = dg.DynamicPartitionsDefinition(name="ticket_batches")
inbox = inbox_asset("ticket_inbox", NAME, EVENTS)
# Edits to one ticket within 30 s count once, with the latest text; an event older than one seen is not acted on.
delivery = {
    context.UPDATED: DeliveryPolicy(content_window_s=600, debounce_s=30.0, stale="ignore"),
    context.CREATED: DeliveryPolicy(content_window_s=600),
}
context_assets = [context.ticket_kb_index, context.ticket_crm_snapshot]
steps = BatchSteps(
    *(NAME, "ticket", EVENTS, batches, inbox, delivery, context.assemble, decide, SPEC, ACTIONS, executor),
    context_ins={a.key.to_python_identifier(): dg.AssetIn(a.key) for a in context_assets},
    context_resources=frozenset({"tickets"}),
    decision_deps=[context.ticket_kb_index],
    decision_resources=frozenset({"local_model", "llm"}),
    action_resources=frozenset({"tickets", "outbox"}),
)
batch = build_batch_assets(steps)
twice = lambda r: EFFECTS.acted_twice(r["tickets"].resolved_url, "assign")  # noqa: E731
checks = build_batch_checks(
    batch,
    steps,
    DeadLetterPolicy(attempts=3, backoff_s=0.2, max_open=50, max_oldest_age_s=8 * 3600),
    Reconcile("tickets_reconcile_with_saga_log_and_helpdesk", "Outcomes, sagas, helpdesk and outbox agree.", reconcile),
    ActedOnTwice(
        "no_ticket_assigned_twice", "No ticket has two live assignments.", twice, "tickets_assigned_twice", ("tickets",)
    ),
    [OutcomeCheck("every_sent_reply_cites_an_article", "Replies cite an article.", replies_cite_articles, ("outbox",))],
)
# The delayed outcome: a ticket its customer reopened within 3 days was not handled; it becomes feedback.
read_reopens = lambda r: r["tickets"].reopened(days=3)  # noqa: E731
reopens = build_delayed_outcome_asset("ticket_reopens", NAME, [batch.actions], read_reopens, ("tickets",), 0.1, "")
hooks = ReviewHooks.from_actions(EVENTS, ACTING, ACTIONS, executor)
# Two runs in flight, as many as the machine has cores (more only contend: benchmarks/daemon_path.py).
policy = BatchPolicy(max_events=500, max_wait_seconds=5.0, max_in_flight=2)
# The CRM snapshot and the article index, refreshed daily at 05:00 UTC (the support team
# declares no time zone of its own).
what = "the CRM snapshot and the help-centre index"
refresh_job, refresh_daily = context_refresh(NAME, "ticket", context_assets, "UTC", "0 5 * * *", what)
# ticket_inbox_sensor (the context refresh first, until it has run once) and ticket_recovery_sensor
sensors = batch_sensors(
    steps, batch.job, policy, sagas=hooks, bootstrap_job=refresh_job, bootstrap_assets=context_assets
)

workflow = Workflow(
    name=NAME,
    event_types=EVENTS,
    register_payloads=context.register,
    assets=[inbox, *context_assets, *batch.assets, reopens, *feedback.assets],
    asset_checks=checks,
    jobs=[batch.job, refresh_job, feedback.job],
    sensors=[*sensors, feedback.sensor],
    schedules=[refresh_daily],
    resources={"tickets": TicketSystems(url=env_or_none("BOSUN_TICKETS_DATABASE_URL"))},
    sagas=hooks,
    reviews=hooks,
    notification_routing=Path(__file__).with_name("notifications.yaml"),
    sample=SampleHooks(
        *(lazy("assets.tickets.demo", f) for f in ("prepare_sample", "sample_prepared", "run_demo", "feed_chunk"))
    ),
)
