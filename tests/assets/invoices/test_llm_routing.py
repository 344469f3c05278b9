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


def _decisions(world):
    from orchestration.db import audit_log
    import sqlalchemy as sa

    audit = world.resources["bosun_db"].audit()
    with audit.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log.c.record).where(audit_log.c.kind == "decision")).scalars()
        return [json.loads(r) for r in rows]


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_unsure_cases_go_to_the_llm_and_guardrails_still_rule(llm_server, world):
    llm_server.set_default(("ok", {"decision": "approve", "confidence": 0.97, "reason": "looks fine"}))
    world.ingest_sample()
    report = world.run_pending()
    assert not report.failed and not report.check_failures
    decisions = _decisions(world)
    via_llm = [d for d in decisions if d["model"] != "local"]
    assert 0 < len(via_llm) < len(decisions) / 4  # only the unsure ones
    assert len(llm_server.requests) == len(via_llm)
    assert all(d["prompt_version"].startswith("prompt-") for d in via_llm)
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


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_no_result_from_the_llm_escalates(llm_server, world):
    llm_server.set_default(("malformed", '{"decision": "approve",'))
    world.ingest_sample()
    world.run_pending()
    via_llm = [d for d in _decisions(world) if d["model"] != "local"]
    assert via_llm and all(d["route"] == "escalate" for d in via_llm)
    assert all("no result" in d["reason"] for d in via_llm if not d["guardrails"]["blocked_by"])
