"""The replay engine with a minimal workflow hook: which records it replays, the diff,
and the accuracy before and after."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from orchestration.audit.chain import AuditEntry, AuditLog
from orchestration.audit.replay import ReplayHook, replay
from orchestration.core import settings
from orchestration.core.db import audit_log

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead


def _decision(event_id, decision, route="act", type_="order.placed"):
    return {
        "event": {"id": event_id, "type": type_},
        "decision": decision,
        "route": route,
        "confidence": 0.9,
        "model": "local",
        "prompt_version": None,
        "amount": 10,
    }


def _hook(asked):
    def redecide(records, prompt_version, model, resources):
        asked.append((len(records), prompt_version, model))
        # "v2" holds what is above 100; everything else as before.
        return [
            {
                "decision": "hold" if prompt_version == "v2" and r["amount"] > 100 else r["decision"],
                "route": "record" if prompt_version == "v2" and r["amount"] > 100 else r["route"],
                "confidence": 0.8,
                "model": model or "local",
                "prompt_version": prompt_version,
            }
            for r in records
        ]

    return ReplayHook(
        "orders",
        ("order.placed",),
        redecide,
        lambda: {"e1": "approve", "e2": "hold", "e3": "approve"},
        replayable=lambda r: "amount" in r,
    )


def test_replay_diffs_the_latest_decision_per_event_in_the_window(bosun_home):
    log = AuditLog(settings.database_url())
    log.append(
        [
            AuditEntry("decision", "k1", {**_decision("e1", "approve"), "amount": 500}),
            AuditEntry("decision", "k2", _decision("e2", "approve")),
            AuditEntry("decision", "k3", {**_decision("e3", "approve"), "amount": 900}),
            AuditEntry("decision", "other", _decision("x", "approve", type_="ticket.opened")),
            AuditEntry("decision", "old", {"event": {"id": "e0", "type": "order.placed"}, "decision": "approve"}),
            AuditEntry("action", "k1", {"step": "pay"}),
        ]
    )
    # k2 was decided again by a re-run batch: the later record is the one replayed.
    log.append([AuditEntry("decision", "k2", {**_decision("e2", "hold", "record"), "amount": 50})])
    with log.engine.begin() as conn:  # k3 is older than the window
        conn.execute(
            audit_log.update()
            .where(audit_log.c.subject == "k3")
            .values(recorded_at=datetime.now(timezone.utc) - timedelta(days=10))
        )
    asked = []
    report = replay(
        log, _hook(asked), {}, since=datetime.now(timezone.utc) - timedelta(days=1), prompt_version="v2", model="m"
    )
    assert asked == [(2, "v2", "m")]
    out = report.as_dict()
    assert (out["decisions"], out["changed"], out["transitions"]) == (2, 1, {"approve/act -> hold/record": 1})
    assert out["not_replayable"] == 1  # recorded before the workflow kept its inputs
    assert out["changes"][0]["event"] == "k1" and out["changes"][0]["label"] == "approve"
    assert out["label_source"] == "sample" and out["before"]["accuracy"] == 1.0 and out["after"]["accuracy"] == 0.5
    assert out["accuracy_change"] == -0.5
    # A reviewer's label wins over the sample's for its event; the sample labels the rest.
    report = replay(log, _hook([]), {}, since=None, prompt_version="v2", feedback_labels={"k1": "hold"})
    assert report.label_source == "feedback+sample" and report.decisions == 3
    assert [c["label"] for c in report.as_dict()["changes"] if c["event"] == "k1"] == ["hold"]
    with log.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one() == 7


def test_replay_reads_decisions_pruned_into_the_archive(bosun_home):
    from orchestration.audit.retention import archive_and_prune, archive_dir, read_archived

    log = AuditLog(settings.database_url())
    log.append([AuditEntry("decision", f"k{i}", {**_decision(f"e{i}", "approve"), "amount": 500}) for i in range(1, 4)])
    with log.engine.begin() as conn:
        conn.execute(
            audit_log.update()
            .where(audit_log.c.seq <= 2)
            .values(recorded_at=datetime.now(timezone.utc) - timedelta(days=400))
        )
    assert archive_and_prune(log, datetime.now(timezone.utc) - timedelta(days=365), archive_dir())["pruned"] == 2
    report = replay(
        log,
        _hook([]),
        {},
        since=datetime.now(timezone.utc) - timedelta(days=500),
        prompt_version="v2",
        archived=read_archived(log),
    )
    assert report.decisions == 3 and len(report.changed) == 3
    assert [c["event"] for c in report.changed] == ["k1", "k2", "k3"]


def test_a_replay_asks_the_prompt_and_model_it_was_given_and_rebuilds_contexts_from_records():
    from types import SimpleNamespace

    from orchestration.audit.replay import (
        ReplayError,
        recorded_context,
        replay_contexts,
        replay_llm,
        replay_routing,
        resolve_prompt,
    )
    from orchestration.decision.routing import RoutingPolicy

    assert resolve_prompt(None, {"a": 1}) is None and resolve_prompt("a", {"a": 1}) == 1
    with pytest.raises(ReplayError, match="unknown prompt version 'b'; known: a"):
        resolve_prompt("b", {"a": 1})
    with pytest.raises(ReplayError, match="none is configured"):
        replay_llm(SimpleNamespace(enabled=False), "gpt-x")
    routing = RoutingPolicy(threshold=0.9, force={"quarantined": "local", "large": "llm"})
    assert replay_routing(routing, None, ()) is routing
    assert (replay_routing(routing, "local", ()).threshold, replay_routing(routing, "local", ()).force) == (0.0, {})
    llm = replay_routing(routing, "gpt-x", ("standard", "large", "quarantined"))
    assert llm.threshold == 1.0 and llm.force == {"standard": "llm", "large": "llm", "quarantined": "local"}

    record = {
        "facts": {"amount": 10},
        "order": {"id": "o1"},
        "event": {"id": "e1"},
        "context_used": {"policy_passages": [{"doc": "d.md", "heading": "H", "score": 2.0}], "sources": {"crm": {}}},
    }
    with pytest.raises(ReplayError, match="recorded before replay was possible"):
        recorded_context({"facts": {}}, {}, "order")
    index = SimpleNamespace(passages=[SimpleNamespace(doc="d.md", heading="H", text="Ship it.")])
    [c] = replay_contexts([record], index, lambda rec, text: recorded_context(rec, text, "order"))
    assert (c["key"], c["order"], c["sources"]) == ("replay:0", {"id": "o1"}, {"crm": {}})
    assert c["policy_passages"] == [{"doc": "d.md", "heading": "H", "score": 2.0, "text": "Ship it."}]
