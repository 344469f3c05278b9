"""`bosun audit show` and `audit search` read records of any workflow's shape: a decision record
whose fields are not the invoice workflow's (several outputs, guardrails as a list, an event
given as text, tokens missing) is shown, never a TypeError."""

import json

from bosun_testing import invoice_event

from orchestration.audit.chain import AuditEntry
from orchestration.cli import main

# A ticket-triage decision: two guarded outputs (team and priority), no model tokens, guardrails
# as a list of names, the event as a plain string, a context without sources.
OTHER_SHAPE = {
    "event": "ticket T-1",
    "decision": {"team": "billing", "priority": "high"},
    "route": "act",
    "confidence": {"team": 0.93, "priority": 0.71},
    "guardrails": ["no_vip_downgrade"],
    "context_used": ["crm", "kb"],
    "confidence_breakdown": "n/a",
    "probabilities": {"billing": "high"},
    "input_tokens": None,
}


def _run(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_decision_record_of_another_shape_is_shown_not_a_crash(bosun_home, capsys):
    from orchestration.definitions import payload_registry
    from resources.database import BosunDatabase

    db = BosunDatabase()
    db.inbox().ingest([invoice_event(1)], payload_registry)
    db.audit().append(
        [
            AuditEntry("decision_pass", "s:e1", ["a", "list", "record"], "b-1"),
            AuditEntry("decision", "s:e1", OTHER_SHAPE, "b-1"),
            AuditEntry("action", "s:e1", {"step": "route_ticket", "status": "done"}, "b-1"),
            AuditEntry("outcome", "s:e1", {"status": "done", "reason": "routed"}, "b-1"),
        ]
    )
    code, out, err = _run(capsys, "audit", "show", "e1")
    assert code == 0 and "Traceback" not in err
    assert "billing" in out and "no_vip_downgrade" in out and "route_ticket" in out and "routed" in out
    code, out, _ = _run(capsys, "audit", "show", "e1", "--json")
    (shown,) = json.loads(out)
    decision = next(s for s in shown["chain"] if s["step"] == "decision")
    assert decision["decision"] == {"team": "billing", "priority": "high"}
    code, out, err = _run(capsys, "audit", "search", "--json", "--limit", "10")
    assert code == 0 and "Traceback" not in err
