"""OpenAIStructuredLLM against a real local HTTP server (tests/fakes/openai_server.py).

Nothing in our code or the openai client is patched: timeouts, retries and Retry-After
go through real sockets.
"""

from __future__ import annotations

import time
from typing import Literal

import dagster as dg
import pytest

# tests/ is on sys.path because tests/conftest.py sits there without an __init__.py.
from fakes.openai_server import FakeOpenAI
from pydantic import BaseModel, Field

from resources.llm import LLMResult, OpenAIStructuredLLM

API_KEY = "sk-test-DO-NOT-LEAK-8f3a1c"

GOOD = {"decision": "approve", "confidence": 0.92, "reason": "matches the purchase order"}


class Verdict(BaseModel):
    decision: Literal["approve", "hold", "reject"]
    confidence: float = Field(ge=0, le=1)
    reason: str


MESSAGES = [
    {"role": "system", "content": "You review invoices. Answer as JSON."},
    {"role": "user", "content": "Invoice 42 for 100.00 EUR, PO 42 for 100.00 EUR."},
]


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def make_llm(fake: FakeOpenAI, **overrides) -> OpenAIStructuredLLM:
    config = dict(api_key=API_KEY, base_url=fake.base_url, model="fake-model", timeout_s=5.0, max_http_retries=0)
    config.update(overrides)
    return OpenAIStructuredLLM(**config)


def assert_no_key(result: LLMResult, llm: OpenAIStructuredLLM) -> None:
    assert API_KEY not in (result.no_result_reason or "")
    assert API_KEY not in repr(result)
    assert API_KEY not in repr(llm)
    assert API_KEY not in str(llm)


def test_good_answer_parses(fake):
    fake.script([("ok", GOOD)])
    llm = make_llm(fake)
    result = llm.complete(MESSAGES, Verdict)

    assert result.value == Verdict(**GOOD)
    assert result.ok and result.no_result_reason is None
    assert result.attempts == 1
    assert result.model == "fake-model"
    assert result.input_tokens > 0 and result.output_tokens > 0
    assert result.latency_s > 0

    sent = fake.requests[0]
    assert sent["authorization"] == f"Bearer {API_KEY}"
    assert sent["body"]["model"] == "fake-model"
    assert sent["body"]["messages"] == MESSAGES
    fmt = sent["body"]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Verdict" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["confidence", "decision", "reason"]


def test_answer_can_depend_on_prompt(fake):
    def answer(body):
        text = body["messages"][-1]["content"]
        return GOOD if "PO 42" in text else {**GOOD, "decision": "hold"}

    fake.set_default(("ok", answer))
    llm = make_llm(fake)
    assert llm.complete(MESSAGES, Verdict).value.decision == "approve"
    other = [MESSAGES[0], {"role": "user", "content": "Invoice 7, no PO."}]
    assert llm.complete(other, Verdict).value.decision == "hold"


def test_json_object_mode(fake):
    fake.script([("ok", GOOD)])
    result = make_llm(fake, structured_output=False).complete(MESSAGES, Verdict)
    assert result.value == Verdict(**GOOD)
    assert fake.requests[0]["body"]["response_format"] == {"type": "json_object"}


def test_malformed_then_good_reasks_with_errors(fake):
    fake.script([("malformed", '{"decision": "approve",'), ("ok", GOOD)])
    messages = list(MESSAGES)
    result = make_llm(fake).complete(messages, Verdict)

    assert result.value == Verdict(**GOOD)
    assert result.attempts == 2
    assert messages == MESSAGES  # the caller's list is not extended

    second = fake.requests[1]["body"]["messages"]
    assert second[: len(MESSAGES)] == MESSAGES
    assert second[-2] == {"role": "assistant", "content": '{"decision": "approve",'}
    assert second[-1]["role"] == "user"
    assert "Invalid JSON" in second[-1]["content"]


def test_wrong_schema_three_times_is_no_result(fake):
    wrong = {"decision": "maybe", "confidence": 7, "extra": True}
    fake.script([("wrong_schema", wrong)] * 3)
    fake.set_default(("ok", GOOD))  # a fourth call would succeed: proves we stop at 3
    llm = make_llm(fake)
    result = llm.complete(MESSAGES, Verdict)

    assert result.value is None
    assert result.attempts == 3
    assert len(fake.requests) == 3
    assert result.no_result_reason.startswith("invalid output after 3 attempts:")
    assert "decision" in result.no_result_reason and "reason: Field required" in result.no_result_reason
    # Each re-ask names the fields the model got wrong.
    assert "confidence" in fake.requests[2]["body"]["messages"][-1]["content"]
    assert_no_key(result, llm)


def test_refusal_counts_as_invalid_attempt(fake):
    fake.script([("refusal", "I can't help with that."), ("ok", GOOD)])
    result = make_llm(fake).complete(MESSAGES, Verdict)
    assert result.value == Verdict(**GOOD)
    assert result.attempts == 2
    assert "refused" in fake.requests[1]["body"]["messages"][-1]["content"]


def test_rate_limit_retry_after_is_honoured(fake):
    fake.script([("status", 429, {"Retry-After": "1"}), ("ok", GOOD)])
    llm = make_llm(fake, max_http_retries=2)
    result = llm.complete(MESSAGES, Verdict)

    assert result.value == Verdict(**GOOD)
    assert result.attempts == 1  # HTTP retries are the client's, not validation re-asks
    assert len(fake.requests) == 2
    # Without Retry-After the client's first backoff is at most 0.5 s.
    gap = fake.requests[1]["time"] - fake.requests[0]["time"]
    assert gap >= 0.9


def test_persistent_500_is_no_result(fake):
    fake.set_default(("status", 500))
    llm = make_llm(fake, max_http_retries=1)
    result = llm.complete(MESSAGES, Verdict)

    assert result.value is None
    assert len(fake.requests) == 2  # the client retried once
    assert "InternalServerError" in result.no_result_reason
    assert "500" in result.no_result_reason
    assert "fake error" not in result.no_result_reason  # no response body
    assert_no_key(result, llm)


def test_hang_is_cut_by_timeout(fake):
    fake.set_default(("hang", 3))
    llm = make_llm(fake, timeout_s=0.5, max_http_retries=0)
    started = time.monotonic()
    result = llm.complete(MESSAGES, Verdict)
    elapsed = time.monotonic() - started

    assert elapsed < 3
    assert result.value is None
    assert "APITimeoutError" in result.no_result_reason
    assert result.attempts == 1


def test_connection_refused_is_no_result():
    with FakeOpenAI() as server:
        base_url = server.base_url
    # The server is closed now, so the port refuses connections.
    llm = OpenAIStructuredLLM(api_key=API_KEY, base_url=base_url, max_http_retries=0, timeout_s=2)
    result = llm.complete(MESSAGES, Verdict)
    assert result.value is None
    assert result.no_result_reason.startswith("APIConnectionError")


def test_401_is_authentication_failed(fake):
    fake.set_default(("status", 401))
    llm = make_llm(fake, max_http_retries=2)
    result = llm.complete(MESSAGES, Verdict)

    assert result.value is None
    assert result.no_result_reason == "authentication failed"
    assert len(fake.requests) == 1  # 401 is not retried
    assert_no_key(result, llm)


def test_key_never_in_repr_even_when_resolved_from_env(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    fake.set_default(("status", 500))
    unresolved = OpenAIStructuredLLM(api_key=dg.EnvVar("OPENAI_API_KEY"), base_url=fake.base_url, max_http_retries=0)
    # What a run sees: Dagster has replaced the EnvVar with the key itself.
    resolved = unresolved.process_config_and_initialize()
    assert resolved.api_key == API_KEY

    for llm in (unresolved, resolved):
        assert API_KEY not in repr(llm) and API_KEY not in str(llm)
        result = llm.complete(MESSAGES, Verdict)
        assert result.value is None
        assert_no_key(result, llm)
    assert all(r["authorization"] == f"Bearer {API_KEY}" for r in fake.requests)


def test_token_counts_are_summed_over_attempts(fake):
    fake.script([("malformed", "not json at all"), ("wrong_schema", {"decision": "approve"}), ("ok", GOOD)])
    result = make_llm(fake).complete(MESSAGES, Verdict)

    assert result.attempts == 3 and result.value == Verdict(**GOOD)
    usages = [r["usage"] for r in fake.requests]
    assert len(usages) == 3 and all(usages)
    assert result.input_tokens == sum(u["prompt_tokens"] for u in usages)
    assert result.output_tokens == sum(u["completion_tokens"] for u in usages)
    # Later attempts carry the longer conversation, so cost more input tokens.
    assert usages[0]["prompt_tokens"] < usages[1]["prompt_tokens"] < usages[2]["prompt_tokens"]


def test_works_as_a_dagster_resource(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    fake.set_default(("ok", GOOD))

    @dg.asset
    def verdict(llm: OpenAIStructuredLLM) -> str:
        result = llm.complete(MESSAGES, Verdict)
        assert result.ok
        return result.value.decision

    outcome = dg.materialize(
        [verdict],
        resources={"llm": OpenAIStructuredLLM(api_key=dg.EnvVar("OPENAI_API_KEY"), base_url=fake.base_url)},
    )
    assert outcome.success
    assert outcome.output_for_node("verdict") == "approve"


def test_embeddings_resource_never_shows_its_key():
    from resources.embeddings import OpenAIEmbeddings

    res = OpenAIEmbeddings(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")
    assert API_KEY not in repr(res) and API_KEY not in str(res)
