"""The router with an LLM configured: the local model first, the LLM only where it is
unsure, guardrails over whatever the LLM says. The LLM is a local HTTP server speaking the
Chat Completions protocol (tests/fakes/openai_server.py)."""

import json

import pytest
from fakes.openai_server import FakeOpenAI

API_KEY = "sk-routing-test-key-77"


@pytest.fixture
def llm_server(bosun_home, monkeypatch):
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


def answer(decision: str, confidence: float = 0.97, reason: str = "looks fine"):
    """A fake LLM reply that states the amount of the invoice in the prompt it was sent."""

    def reply(body):
        prompt = body["messages"][0]["content"]
        invoice = json.loads(prompt.split("Invoice:\n", 1)[1])
        return {"decision": decision, "amount": float(invoice["amount"]), "confidence": confidence, "reason": reason}

    return reply


def _decisions(world, kind="decision"):
    import sqlalchemy as sa

    from orchestration.core.db import audit_log

    audit = world.resources["bosun_db"].audit()
    with audit.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log.c.record).where(audit_log.c.kind == kind)).scalars()
        return [json.loads(r) for r in rows]


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_unsure_cases_go_to_the_llm_and_guardrails_still_rule(llm_server, world):
    llm_server.set_default(("ok", answer("approve")))
    world.ingest_sample()
    report = world.run_pending()
    assert not report.failed and not report.check_failures
    decisions = _decisions(world)
    via_llm = [d for d in decisions if d["model"] != "local"]
    assert 0 < len(via_llm) < len(decisions) / 4  # only the unsure ones
    # One question per LLM decision, plus one per answer a hard rule refused: the decision
    # loop asked again, the rule stated (this LLM approves regardless, so the rule stands).
    asked_again = [p for p in _decisions(world, "decision_pass") if p["model"] != "local"]
    assert asked_again and all(p["next"].startswith("rule_violated: ") for p in asked_again)
    assert len(llm_server.requests) == len(via_llm) + len(asked_again)
    restated = [r["body"]["messages"] for r in llm_server.requests if len(r["body"]["messages"]) == 2]
    assert len(restated) == len(asked_again)
    assert all(any(p["blocked_by"][0] in m[1]["content"] for m in restated) for p in asked_again)
    assert all(d["prompt_version"].startswith("decide_invoice-") for d in via_llm)
    assert all(d["cost_usd"] > 0 and d["input_tokens"] > 0 and d["latency_s"] > 0 for d in via_llm)
    # The LLM said "approve" to everything; hard rules overrode it where they apply.
    blocked = [d for d in via_llm if d["guardrails"]["blocked_by"]]
    assert all(d["decision"] != "approve" for d in blocked)
    # No secret and no personal data reached the model's prompt or the audit log.
    sent = json.dumps([r["body"] for r in llm_server.requests])
    assert "@" not in sent.replace("[EMAIL]", "")
    assert API_KEY not in json.dumps(decisions)
    # The model reads the policy passages the budgeted assembly kept, counted in its tokenizer.
    assert "may be approved automatically only when" in sent
    assert all(d["context_used"]["assembly"]["tokenizer"].startswith("tiktoken:cl100k_base") for d in decisions)
    # With an LLM configured, each batch plots its share of the decisions and what it cost.
    import dagster as dg

    from orchestration.verification import metrics

    plotted = [
        world.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("invoice_actions"), asset_partitions=[key]), limit=1
        )
        .records[0]
        .asset_materialization.metadata
        for key in report.batches
    ]
    shares = [md[metrics.LLM_SHARE].value for md in plotted]
    assert all(0 <= s < 1 for s in shares) and any(s > 0 for s in shares)
    assert sum(md[metrics.LLM_COST].value for md in plotted) == pytest.approx(
        sum(d["cost_usd"] for d in via_llm), abs=1e-5
    )


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_no_result_from_the_llm_escalates(llm_server, world):
    llm_server.set_default(("malformed", '{"decision": "approve",'))
    world.ingest_sample()
    world.run_pending()
    via_llm = [d for d in _decisions(world) if d["model"] != "local"]
    assert via_llm and all(d["route"] == "escalate" for d in via_llm)
    assert all("no result" in d["reason"] for d in via_llm if not d["guardrails"]["blocked_by"])


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_a_spent_daily_budget_routes_to_the_local_model_instead_of_failing(llm_server, world, monkeypatch):
    from orchestration.decision.llm_ledger import today

    llm_server.set_default(("ok", answer("approve")))
    monkeypatch.setenv("BOSUN_INVOICES_LLM_DAILY_TOKENS", "3000")
    world.ingest_sample()
    report = world.run_pending()
    assert not report.failed
    decisions = _decisions(world)
    fell_back = [d for d in decisions if "daily LLM budget spent" in d["route_reason"]]
    assert fell_back and all(d["model"] == "local" for d in fell_back)
    spend = world.resources["bosun_db"].llm_ledger().spend("invoices", today())
    assert 0 < spend.calls == len(llm_server.requests) < len(fell_back)


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_guardrails_are_checks_on_the_decisions_with_activations_per_guardrail(world):
    import dagster as dg

    from guardrails.engine import load_policy

    world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.check_failures
    kinds = load_policy("invoices").rule_names()
    seen = {}
    for check, severity in (
        ("hard_guardrails_held", "ERROR"),
        ("no_soft_flagged_decision_acted_on_unreviewed", "WARN"),
    ):
        key = dg.AssetCheckKey(dg.AssetKey("invoice_decisions"), check)
        record = world.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed and evaluation.severity.value == severity
        seen.update(
            {k[: -len(".activations")]: v.value for k, v in evaluation.metadata.items() if k.endswith(".activations")}
        )
    assert set(seen) == set(kinds)  # every guardrail has its own figure
    assert seen["no_instructions_in_free_text"] > 0, seen
    # The audit has the same counts, one record per batch.
    audit = _decisions_of_kind(world, "guardrail_activations")
    assert len(audit) == len(report.batches)
    assert sum(a.get("no_instructions_in_free_text", 0) for a in audit) == seen["no_instructions_in_free_text"]


def _decisions_of_kind(world, kind):
    import sqlalchemy as sa

    from orchestration.core.db import audit_log

    with world.resources["bosun_db"].audit().engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log.c.record).where(audit_log.c.kind == kind)).scalars()
        return [json.loads(r) for r in rows]


@pytest.mark.parametrize("world", ["sqlite", "postgres"], indirect=True)
def test_the_same_question_under_the_same_prompt_is_answered_from_the_cache(llm_server, world):
    from assets.invoices.context import assemble_context
    from assets.invoices.reasoning import propose
    from assets.invoices.workflow import registry
    from orchestration.trigger.sample_events import as_inbox_events, read_events
    from resources.defaults import chat_model

    llm_server.set_default(("ok", answer("approve")))
    erp, ledger = world.resources["erp"], world.resources["bosun_db"].llm_ledger()
    events = as_inbox_events(read_events(world.sample / "invoices.jsonl"), registry)
    contexts = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, None)
    llm = chat_model()
    first, figures = propose(contexts, world.resources["local_model"], llm, ledger)
    asked = len(llm_server.requests)
    assert asked == figures["llm_calls"] > 0 and figures["llm_cost_usd"] > 0
    again, figures = propose(contexts, world.resources["local_model"], llm, ledger)
    assert len(llm_server.requests) == asked and figures["llm_cache_hits"] == asked and figures["llm_calls"] == 0
    cached = [p for p in again if p["cache_hit"]]
    assert len(cached) == asked and all(p["cost_usd"] == 0 for p in cached)
    assert [p["decision"] for p in again] == [p["decision"] for p in first]
