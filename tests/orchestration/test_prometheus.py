"""The Prometheus endpoint after a demo run: real processes, real HTTP, parsed as Prometheus does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from bosun_testing import BosunServer
from prometheus_client.parser import text_string_to_metric_families

BOSUN = Path(sys.executable).parent / "bosun"


def _samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} and the families' types by name."""
    out, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, types


def _one(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_endpoints_agree_with_bosun_status_after_a_demo(tmp_path, bosun_home):
    home = tmp_path / "demo"
    env = {**os.environ, "BOSUN_HOME": str(home), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    demo = subprocess.run(
        [str(BOSUN), "demo", "--workflow", "invoices", "--events", "150", "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = json.loads(demo.stdout[demo.stdout.index("{") : demo.stdout.rindex("}") + 1])
    servers = [
        BosunServer(env, tmp_path / "metrics.log", command=("metrics",), ready_path="/metrics"),
        BosunServer(env, tmp_path / "serve.log"),
    ]
    try:
        status = json.loads(
            subprocess.run(
                [str(BOSUN), "status", "--json"], env=env, capture_output=True, text=True, timeout=120, check=True
            ).stdout
        )
        texts = []
        for server in servers:
            server.wait_ready()
            # No API key: Prometheus scrapes without one (documented in orchestration/README.md).
            resp = httpx.get(server.url + "/metrics", timeout=30)
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/plain")
            texts.append(resp.text)
    finally:
        for server in servers:
            server.stop()

    assert status == summary["status"]
    for text in texts:
        samples, types = _samples(text)
        assert _one(samples, "bosun_database_up") == 1
        # Same numbers as `bosun status --json`.
        for state, n in status["events_by_status"].items():
            assert _one(samples, "bosun_events", status=state) == n
        assert {dict(k[1])["status"] for k in samples if k[0] == "bosun_events"} == set(status["events_by_status"])
        assert _one(samples, "bosun_events_received_total") == status["events_total"]
        assert _one(samples, "bosun_duplicate_deliveries_total") == status["duplicate_deliveries"]
        assert _one(samples, "bosun_review_queue_pending") == status["review_items_pending"]
        assert _one(samples, "bosun_dead_letters_open") == status["dead_letters_open"] == 0
        # What the batch runs recorded adds up to the inbox's terminal states.
        for state in ("done", "escalated"):
            assert (
                _one(samples, "bosun_outcomes_total", workflow="invoices", status=state)
                == status["events_by_status"][state]
            )
        decided = status["events_by_status"]["done"] + status["events_by_status"]["escalated"]
        assert sum(v for k, v in samples.items() if k[0] == "bosun_decisions_total") == decided
        assert _one(samples, "bosun_decision_confidence_count", workflow="invoices") == decided
        assert _one(samples, "bosun_decision_confidence_bucket", workflow="invoices", le="+Inf") == decided
        assert _one(samples, "bosun_event_latency_seconds_count", workflow="invoices") == decided
        assert types["bosun_decision_confidence"] == types["bosun_event_latency_seconds"] == "histogram"
        assert any(k[0] == "bosun_guardrail_activations_total" for k in samples)
        assert _one(samples, "bosun_decision_tokens_total", workflow="invoices", direction="input") == 0
        assert _one(samples, "bosun_decision_cost_usd_total", workflow="invoices") == 0
        assert _one(samples, "bosun_batch_runs_total", workflow="invoices") == summary["batches"]
        assert sum(v for k, v in samples.items() if k[0] == "bosun_audit_records_total") == summary["audit"]["records"]
        assert sum(v for k, v in samples.items() if k[0] == "bosun_sagas") == _one(
            samples, "bosun_sagas", workflow="invoices", status="done"
        )
        assert _one(samples, "bosun_sagas", workflow="invoices", status="done") > 0
        assert ("bosun_llm_tokens_total", frozenset()) not in samples  # no LLM configured: no spend rows


def test_a_scrape_answers_when_the_database_does_not():
    from bosun_testing import free_port

    from orchestration.verification.prometheus import exposition

    samples, _ = _samples(exposition(f"postgresql+psycopg2://bosun@127.0.0.1:{free_port()}/gone").decode())
    assert _one(samples, "bosun_database_up") == 0
    assert not [k for k in samples if k[0] == "bosun_events"]
