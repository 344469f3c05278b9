"""The invoice workflow on the engine's decision loop, end to end through the batch job:
an invoice decided while the payments API was down is re-read and decided again (two passes
in the audit), and an LLM answer a hard rule refuses is asked again with the rule stated.
The LLM is the local Chat Completions server (tests/fakes/openai_server.py)."""

import json
import re
from typing import ClassVar

import dagster as dg
import pytest
import sqlalchemy as sa
from fakes.openai_server import FakeOpenAI

from assets.invoices.erp import ERPResource
from resources.context_sources import ContextSources

SOURCES = ContextSources(timeout_s=0.5, attempts=2, backoff_s=0.01)


class PaymentsDownAtFirst(ERPResource):
    """The real ERP, whose payments API fails the batch's first read (both attempts) and
    answers from then on."""

    failures_left: ClassVar[list[int]] = [0]

    def paid_invoices(self, invoice_ids):
        if self.failures_left[0] > 0:
            self.failures_left[0] -= 1
            raise ConnectionError("payments API: HTTP 503 Service Unavailable")
        return super().paid_invoices(invoice_ids)


def _records(world, kind: str) -> list[tuple[str, dict]]:
    from orchestration.core.db import audit_log

    with world.resources["bosun_db"].audit().engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.subject, audit_log.c.record).where(audit_log.c.kind == kind).order_by(audit_log.c.seq)
        )
        return [(s, json.loads(r)) for s, r in rows]


def test_an_invoice_decided_while_a_source_was_down_is_reread_and_decided_again(make_small_world, capsys):
    from assets.invoices.workflow import DECISION_LOOP
    from orchestration.cli import main
    from orchestration.trigger.inbox import TERMINAL_STATES

    PaymentsDownAtFirst.failures_left[0] = SOURCES.attempts
    world = make_small_world(n=120, resources={"erp": PaymentsDownAtFirst(), "context_sources": SOURCES})
    summary = world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    decisions = dict(_records(world, "decision"))
    first_passes = dict(_records(world, "decision_pass"))
    # Without payments (a duplicate cannot be ruled out) every decision lost confidence; the
    # ones left between ask and act read their sources again and asked the model again.
    reread = {k: d for k, d in decisions.items() if d["passes"] == 2}
    assert reread and set(reread) == set(first_passes)
    for key, d in reread.items():
        first = first_passes[key]
        assert (first["pass"], first["why"], first["next"], d["pass"], d["why"]) == (
            1,
            "first",
            "low_confidence",
            2,
            "low_confidence",
        )
        assert first["sources"]["payments"] == "missing" and 0.6 <= first["confidence"] < 0.75
        assert first["model"] == d["model"] == "local"  # the model was asked a second time
        assert d["context_used"]["sources"]["payments"]["status"] == "live"
        assert "missing_source:payments" not in {f["name"] for f in d["context_used"]["quality_factors"]}
        assert d["context_hash"] != first["context_hash"] and d["re_retrieved"]
    # Decided again with the payments known: mostly paid now, never one already paid.
    assert any(d["route"] == "act" for d in reread.values())
    assert all(not d["facts"]["already_paid"] or d["decision"] != "approve" for d in reread.values())
    # The others were below the ask threshold (or sure regardless): one pass, the factor stays.
    once = [d for d in decisions.values() if d["passes"] == 1]
    assert all("missing_source:payments" in {f["name"] for f in d["context_used"]["quality_factors"]} for d in once)
    assert all(d["passes"] <= DECISION_LOOP.max_passes for d in decisions.values())
    # The batch's metadata says the same, in figures, with the seconds each hook took.
    mat = world.instance.get_latest_materialization_event(dg.AssetKey("invoice_decisions")).asset_materialization
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["extra_passes"] == meta["asked_again_after_context"] == len(reread) and meta["passes_max"] == 2
    assert meta["read_more_s"] > 0 and meta["reason_s"] > 0 and meta["judge_s"] > 0
    counts = world.resources["bosun_db"].inbox().counts()
    assert set(counts["by_status"]) <= set(TERMINAL_STATES) and counts["received"] == summary.accepted
    # `bosun audit show` prints the first pass before the decision it led to.
    key = next(iter(reread))
    assert main(["audit", "show", key]) == 0
    text = capsys.readouterr().out
    assert re.search(
        r"pass +1 of 2 \(first\): local proposed \w+ -> \w+, confidence 0\.6\d*; then low_confidence", text
    )
    assert text.index(" pass ") < text.index(" decision ")


def _policy_aware(body):
    """An LLM that approves, until it is told a rule: then it picks the first decision the
    policy still allows, as the refusal lists them."""
    messages = body["messages"]
    invoice = json.loads(messages[0]["content"].split("Invoice:\n", 1)[1])
    decision = "approve"
    if len(messages) > 1:
        decision = re.search(r"The policy allows only: (\w+)", messages[1]["content"]).group(1)
    return {"decision": decision, "amount": float(invoice["amount"]), "confidence": 0.97, "reason": "checked"}


@pytest.fixture
def fake_llm():
    with FakeOpenAI(model="gpt-4o-mini") as server:
        yield server


def test_an_llm_answer_a_hard_rule_refuses_is_asked_again_with_the_rule_stated(fake_llm, make_small_world):
    from guardrails.engine import load_policy
    from resources.llm import OpenAIStructuredLLM

    fake_llm.set_default(("ok", _policy_aware))
    llm = OpenAIStructuredLLM(api_key="sk-loop-test", base_url=fake_llm.base_url, model="gpt-4o-mini")
    world = make_small_world(n=300, resources={"llm": llm})
    world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    decisions = dict(_records(world, "decision"))
    refused = dict(_records(world, "decision_pass"))
    asked_again = {k: d for k, d in decisions.items() if d["why"].startswith("rule_violated: ")}
    assert asked_again and set(asked_again) <= set(refused)
    rules = {r.name: r.description for r in load_policy("invoices").hard}
    restated = [r["body"]["messages"] for r in fake_llm.requests if len(r["body"]["messages"]) == 2]
    assert len(restated) == len(asked_again)
    for key, d in asked_again.items():
        first = refused[key]
        assert first["proposed"] == "approve" and first["blocked_by"] and first["model"] == "gpt-4o-mini"
        rule = first["blocked_by"][0]
        assert d["why"] == f"rule_violated: {', '.join(first['blocked_by'])}"
        # The model was told the rule and its reason, in plain words, and answered within it.
        assert any(f"- {rule}: {rules[rule]}" in m[1]["content"] for m in restated)
        assert d["proposed"] != "approve" and d["guardrails"]["blocked_by"] == []
        assert d["route"] in ("record", "escalate") and d["decision"] == d["proposed"]
    # A rule that refused an answer counts as an activation, though the final answer passed it.
    activations: dict[str, int] = {}
    for _, batch in _records(world, "guardrail_activations"):
        for name, n in batch.items():
            activations[name] = activations.get(name, 0) + n
    for rule in {refused[k]["blocked_by"][0] for k in asked_again}:
        assert activations[rule] >= sum(refused[k]["blocked_by"][0] == rule for k in asked_again)
    # One question per pass the LLM answered, and nothing more.
    llm_passes = sum(d["model"] != "local" for d in decisions.values()) + sum(
        p["model"] != "local" for p in refused.values()
    )
    assert len(fake_llm.requests) == llm_passes
