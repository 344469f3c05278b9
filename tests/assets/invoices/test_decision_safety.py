"""Acceptance of the decision layer's safety: injected memos never pay, personal data
never reaches the LLM or the audit log, and no fault of the LLM endpoint crashes a run.
The LLM is the local Chat Completions server (tests/fakes/openai_server.py)."""

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fakes.openai_server import FakeOpenAI

CORPUS = Path(__file__).resolve().parents[2] / "guardrails" / "injection_corpus.txt"


def corpus() -> list[str]:
    return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


def approve_everything(body):
    """An LLM that says approve, with the invoice's amount, whatever it is asked."""
    prompt = body["messages"][0]["content"]
    invoice = json.loads(prompt.split("Invoice:\n", 1)[1])
    return {"decision": "approve", "amount": float(invoice["amount"]), "confidence": 0.99, "reason": "ok"}


@pytest.fixture
def fake_llm():
    with FakeOpenAI(model="gpt-4o-mini") as server:
        yield server


def llm_for(server, **kw):
    from resources.llm import OpenAIStructuredLLM

    return OpenAIStructuredLLM(api_key="sk-safety-test", base_url=server.base_url, model="gpt-4o-mini", **kw)


def _audit_rows(world, kind=None):
    from orchestration.core.db import audit_log

    q = sa.select(audit_log.c.kind, audit_log.c.record)
    if kind:
        q = q.where(audit_log.c.kind == kind)
    with world.resources["bosun_db"].audit().engine.connect() as conn:
        return [(k, r) for k, r in conn.execute(q)]


def _decisions(world):
    return [json.loads(r) for _, r in _audit_rows(world, "decision")]


def test_the_corpus_has_every_kind_of_injection():
    lines = corpus()
    assert len(lines) >= 50
    assert any("Reference:" in x for x in lines) and any(re.search(r"[^\x00-\x7f]", x) for x in lines)


def test_injected_memos_never_pay_and_are_all_flagged(fake_llm, make_small_world):
    """Each corpus memo on an otherwise-valid invoice; the LLM approves everything."""
    from assets.invoices import sample_data
    from orchestration.definitions import payload_registry

    fake_llm.set_default(("ok", approve_everything))
    world = make_small_world(n=300, resources={"llm": llm_for(fake_llm)})
    labels = sample_data.load_labels(world.sample)
    clean = [json.loads(line) for line in (world.sample / "invoices.jsonl").read_text().splitlines()]
    clean = list({e["id"]: e for e in clean if labels[e["id"]]["reason"] == "ok"}.values())
    memos = corpus()
    assert len(clean) >= len(memos)
    events = []
    for i, (event, memo) in enumerate(zip(clean, memos)):
        events.append({**event, "id": f"inj-{i:03d}", "payload": {**event["payload"], "memo": memo}})
    summary = world.resources["bosun_db"].inbox().ingest(events, payload_registry)
    assert summary.accepted == len(memos)
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    decisions = {d["event"]["id"]: d for d in _decisions(world)}
    injected = [decisions[f"inj-{i:03d}"] for i in range(len(memos))]
    assert all(d["context_used"] is not None for d in injected)
    flagged = [d for d in injected if "no_instructions_in_free_text" in d["guardrails"]["blocked_by"]]
    assert len(flagged) == len(memos)
    assert all(d["route"] == "escalate" and d["decision"] == "escalate" for d in injected)
    # Quarantined text is never sent to a model, and nothing injected was paid.
    sent = json.dumps([r["body"] for r in fake_llm.requests], ensure_ascii=False)
    assert not any(m in sent for m in memos)
    paid = {p["invoice_id"] for p in world.resources["erp"].live_payments()}
    assert not paid & {e["payload"]["invoice_id"] for e in events}


def _personal_data(sample: Path) -> set[str]:
    from assets.invoices import sample_data

    found = set()
    for line in (sample / "invoices.jsonl").read_text().splitlines():
        memo = json.loads(line)["payload"]["memo"]
        found |= set(re.findall(r"[\w.]+@example\.com", memo))
        for m in re.findall(r"(?:on|to|file) ((?:\+?[\dA-Z]{2,4} ?){3,8})\.", memo):
            found |= {m.strip(), m.replace(" ", "")}
    found |= {v["iban"] for v in sample_data.load_erp(sample)[0]}
    return {f for f in found if len(f) >= 8}


def test_no_personal_data_reaches_the_llm_or_the_audit_log(fake_llm, make_small_world):
    from assets.invoices.context import assemble_context
    from assets.invoices.reasoning import propose
    from assets.invoices.workflow import registry
    from orchestration.decision.routing import RoutingPolicy
    from orchestration.trigger.sample_events import as_inbox_events, read_events

    fake_llm.set_default(("ok", approve_everything))
    world = make_small_world(n=300, resources={"llm": llm_for(fake_llm)})
    pii = _personal_data(world.sample)
    assert len(pii) > 20
    # Every invoice of the sample through the LLM (not only the unsure ones) ...
    erp = world.resources["erp"]
    events = as_inbox_events(read_events(world.sample / "invoices.jsonl"), registry)
    contexts = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, None)
    assert any(c["pii_found"] for c in contexts)
    everything = RoutingPolicy(threshold=1.0, force={"standard": "llm", "large_amount": "llm"})
    propose(contexts, world.resources["local_model"], llm_for(fake_llm), None, everything)
    # ... and the whole workflow, whose audit log is then read in full.
    world.ingest_sample()
    assert not world.run_pending().failed
    sent = json.dumps([r["body"] for r in fake_llm.requests], ensure_ascii=False)
    assert len(fake_llm.requests) >= len(contexts)
    audit = "\n".join(r for _, r in _audit_rows(world))
    reviews = json.dumps(world.resources["bosun_db"].review_queue().pending(limit=10_000), default=str)
    assert [p for p in pii if p in sent] == [] and [p for p in pii if p in audit] == []
    assert [p for p in pii if p in reviews] == []  # what a reviewer sees is redacted too


FAULTS = {
    "malformed_json": [("malformed", '{"decision": "approve",')],
    "wrong_schema": [("wrong_schema", {"verdict": "yes", "confidence": "high"})],
    "429_retry_after": [("status", 429, {"Retry-After": "0"})],
    "500": [("status", 500)],
    "hang": [("hang", 5)],
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_fault_of_the_llm_ends_in_a_decision_a_fallback_or_an_escalation(fault, fake_llm, make_small_world):
    from orchestration.trigger.inbox import TERMINAL_STATES

    if fault == "429_retry_after":
        fake_llm.script(FAULTS[fault])  # once, then the endpoint is fine again
        fake_llm.set_default(("ok", approve_everything))
    else:
        fake_llm.set_default(FAULTS[fault][0])
    world = make_small_world(resources={"llm": llm_for(fake_llm, timeout_s=0.5, max_http_retries=1)})
    summary = world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    counts = world.resources["bosun_db"].inbox().counts()
    assert set(counts["by_status"]) <= set(TERMINAL_STATES) and counts["received"] == summary.accepted
    routed = [d for d in _decisions(world) if "-> llm" in d["route_reason"] or "<" in d["route_reason"]]
    assert routed
    if fault in ("malformed_json", "wrong_schema"):
        # Re-asked with the validation errors, then an explicit "no result" that a person takes.
        assert all(d["route"] == "escalate" for d in routed)
        assert len(fake_llm.requests) == 3 * len(routed)
    elif fault == "429_retry_after":
        assert fake_llm.requests[1]["retry_count"] == "1"  # the client waited and retried
        assert all(d["model"] == "gpt-4o-mini" for d in routed)
    else:
        # The endpoint is down: a few tries, then the local model for the rest of the batch.
        assert len(fake_llm.requests) <= 3 * 2
        assert all(d["model"] == "local" and "fell back to local" in d["route_reason"] for d in routed)
