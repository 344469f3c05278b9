"""The ticket workflow end to end, in-process: discovered like any workflow, the sample's
tickets (injections, personal data, legal threats, refunds, ambiguity) decided, acted on and
checked; the LLM played by the local OpenAI-compatible server."""

import json
import re

import dagster as dg
import pytest
import sqlalchemy as sa
from fakes.openai_server import FakeOpenAI

from assets.tickets import demo, sample_data
from assets.tickets.systems import TicketSystems, tickets
from guardrails.output_guards import personal_data
from orchestration.core.workflows import discover, payload_registry
from orchestration.trigger.runner import run_pending_batches
from resources.outbox import LIVE, notifications

SEED = 11


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The three text models and the calibrator, trained once for the module on other seeds."""
    from resources.local_model import LocalModel

    base = tmp_path_factory.mktemp("ticket_models")
    systems = TicketSystems(url=f"sqlite:///{base / 'scratch.db'}")
    with pytest.MonkeyPatch.context() as mp:  # the labelled sample goes to the module's folder
        mp.setenv("BOSUN_TRAINING_DIR", str(base / "training"))
        demo.prepare(base / "sample", 50, SEED, systems, LocalModel(model_dir=str(base / "models")))
    return base / "models"


@pytest.fixture
def workflow(bosun_home, model_dir, monkeypatch):

    monkeypatch.setenv("BOSUN_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("BOSUN_TRAINING_DIR", str(model_dir.parent / "training"))
    workflows = discover(["assets"])
    wf = workflows["tickets"]
    return wf, workflows


def _defs(wf, llm=None):
    from resources.defaults import default_resources

    resources = {**default_resources(), **wf.resources, **({"llm": llm} if llm is not None else {})}
    return dg.Definitions.merge(wf.definitions(), dg.Definitions(resources=resources))


def _run(wf, workflows, defs, events, crm):
    from assets.tickets import batches, context_assets  # noqa: F401

    r = defs.resources
    demo.seed_systems(r["tickets"], crm, events)
    assert r["bosun_db"].inbox().ingest(events, payload_registry(workflows)).accepted == len(events)
    with dg.instance_for_test() as instance:
        dg.materialize(context_assets, instance=instance, resources=r)
        report = run_pending_batches(
            defs, "ticket_batch_job", batches, wf.event_types, r["bosun_db"].inbox(), instance, sample_data_policy()
        )
    return report


def sample_data_policy():
    from orchestration.trigger.batching import BatchPolicy

    return BatchPolicy(max_events=200)


def _ends(defs) -> tuple[dict, dict, dict]:
    """Per ticket: the inbox state, the helpdesk row, the live reply (if any)."""
    from orchestration.core.db import engine_for, inbox

    r = defs.resources
    with engine_for(r["bosun_db"].resolved_url).connect() as c:
        states = {p["ticket_id"]: s for p, s in c.execute(sa.select(inbox.c.payload, inbox.c.status))}
    with r["tickets"].engine.connect() as c:
        desk = {t.ticket_id: t for t in c.execute(sa.select(tickets))}
    with r["outbox"].engine.connect() as c:
        q = sa.select(notifications.c.entity, notifications.c.body).where(
            notifications.c.status.in_(LIVE), notifications.c.workflow == "tickets"
        )
        replies = {e: b for e, b in c.execute(q)}
    return states, desk, replies


def test_the_sample_runs_end_to_end_within_the_policy(workflow):
    wf, workflows = workflow
    defs = _defs(wf)
    crm, events, labels = sample_data.generate(240, SEED)
    report = _run(wf, workflows, defs, events, crm)
    assert report.batches and not report.failed and report.check_failures == []
    states, desk, replies = _ends(defs)
    assert set(states.values()) <= {"done", "escalated"}
    assert replies, "some tickets get an automatic reply"
    by_ticket = {e["entity_key"]: labels[e["id"]] for e in events}
    names = {c["customer_id"]: c["name"] for c in crm}
    cust = {e["entity_key"]: e["payload"]["customer_id"] for e in events}
    for ticket_id, body in replies.items():
        flags = by_ticket[ticket_id]["flags"]
        # No automatic reply outside the policy: legal threats, injections, large refunds.
        assert not {"legal_threat", "injection", "large_refund"} & set(flags), (ticket_id, flags)
        assert re.search(r"\[kb-\d\d-[a-z-]+\]", body["reply"]), body["reply"]
        assert personal_data(body["reply"], [names[cust[ticket_id]]]) == [], body["reply"]
    # Every routed ticket is assigned once and carries a priority; the reply step ran only where decided.
    routed = [t for t, s in states.items() if s == "done" and desk[t].team]
    assert len(routed) > len(events) // 2
    assert set(replies) <= set(routed)
    # The delayed outcome: tickets reopened within 3 days fail, are audited and become feedback once.
    from orchestration.decision.feedback import FeedbackStore

    for _ in range(2):
        reopened = demo.reopen_sample(defs.resources, events, labels, SEED)
    assert reopened["failed"] > 0 and reopened["new_feedback"] == 0  # the second pass records nothing new
    rows = FeedbackStore(defs.resources["bosun_db"].resolved_url).list("tickets")
    assert len(rows) == reopened["failed"] and {r["label"] for r in rows} == {"failed:ticket_reopens"}


def _llm_answer(body: dict) -> dict:
    """A careless LLM: it repeats whatever looks like personal data and promises money on refunds."""
    prompt = body["messages"][0]["content"]
    article = re.search(r"\[(kb-\d\d-[a-z-]+)\]", prompt)
    cited = article.group(1) if article else ""
    reply = f"See [{cited}]." if cited else ""
    if "refund" in prompt.lower():
        reply = f"We will refund you the full amount. [{cited}]"
    if "[EMAIL]" in prompt or "[PHONE]" in prompt:
        reply = f"We will call you on +49 30 1234567. [{cited}]"
    return {"team": "billing", "priority": "normal", "reply": reply, "cited_article": cited, "confidence": 0.95}


def test_no_personal_data_reaches_the_llm_and_its_replies_are_guarded(workflow):
    from resources.llm import OpenAIStructuredLLM

    wf, workflows = workflow
    crm, events, labels = sample_data.generate(160, SEED + 1)
    with FakeOpenAI() as fake:
        fake.set_default(("ok", _llm_answer))
        llm = OpenAIStructuredLLM(api_key="sk-test", base_url=fake.base_url, max_attempts=1)
        defs = _defs(wf, llm)
        report = _run(wf, workflows, defs, events, crm)
        requests = [json.dumps(r) for r in fake.requests]
    assert report.batches and not report.failed, report
    assert requests, "the unsure tickets went to the LLM"
    emails, ibans = [c["email"] for c in crm], [i.replace(" ", "") for i in sample_data.IBANS]
    for text in requests:
        assert not any(e in text for e in emails)
        assert not any(i in text.replace(" ", "") for i in ibans)
        assert not any(c["name"] in text for c in crm), "no customer's name goes to the LLM"
        assert "QUARANTINED" not in text, "quarantined text never goes to a model that reads it"
    _, _, replies = _ends(defs)
    for body in replies.values():
        assert "will refund" not in body["reply"] and "+49" not in body["reply"], body["reply"]


def test_team_corrections_retrain_the_team_model_behind_the_not_worse_check(workflow, model_dir, tmp_path, monkeypatch):
    import shutil

    from assets.tickets import feedback
    from orchestration.decision.feedback import FeedbackStore

    wf, workflows = workflow
    shutil.copytree(model_dir, tmp_path / "models")
    monkeypatch.setenv("BOSUN_MODEL_DIR", str(tmp_path / "models"))  # a promotion must not touch the module's models
    defs = _defs(wf)
    crm, events, labels = sample_data.generate(200, SEED + 2)
    assert not _run(wf, workflows, defs, events, crm).failed
    # A reviewer corrects the team of every ticket (and, separately, some priorities).
    rows = [
        {"workflow": "tickets", "subject": f"helpdesk:{e['id']}", "kind": "correct", "reviewer": "r1",
         "label": f"team={labels[e['id']]['team']}" + (f",priority={labels[e['id']]['priority']}" if i % 3 == 0 else "")}
        for i, e in enumerate(events)
    ]  # fmt: skip
    FeedbackStore(defs.resources["bosun_db"].resolved_url).record_many(rows)
    with dg.instance_for_test() as instance:
        result = dg.materialize(feedback.assets[:3], instance=instance, resources=defs.resources, raise_on_error=False)
    examples = result.output_for_node(feedback.team.key("feedback"))["examples"]
    assert len(examples) == len(events) and {e["label"] for e in examples} <= set(sample_data.TEAMS)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    verdict = checks["retrained_model_is_not_worse"]
    assert verdict.metadata["accuracy_after"].value >= 0.85, verdict.metadata
    assert verdict.passed == result.success


HARMLESS = sample_data.HARMLESS_ALARMING


def test_alarming_but_harmless_texts_are_not_quarantined_and_injections_are(capsys):
    from guardrails.input_guards import guard_with_names

    quarantined = [t for t in HARMLESS if guard_with_names(t).injection_signals]
    rate = len(quarantined) / len(HARMLESS)
    print(f"false quarantine rate on the harmless corpus: {rate:.2%} ({len(quarantined)}/{len(HARMLESS)})")
    assert rate <= 0.25, quarantined
    for t in sample_data.INJECTIONS:
        assert guard_with_names(t).injection_signals, t
