"""`bosun review list / show / approve / reject / correct` on escalated invoices that pay
nothing (a hold, a reject); paying approvals are tested with a workflow run in
tests/assets/invoices/test_review_answers.py and test_payment_saga.py."""

import copy
import json

import pytest
from bosun_testing import PORTAL_EVENT as EVENT

from orchestration.audit.chain import AuditEntry
from orchestration.cli import main


@pytest.fixture
def queue(bosun_home):
    """Three invoices: two escalated (a hold, a reject) and one paid by Bosun."""
    from orchestration.definitions import defs, payload_registry

    db = defs.resources["bosun_db"]
    events, decisions = [], {"p-1": "hold", "p-2": "reject", "p-3": "approve"}
    for i, decision in decisions.items():
        e = copy.deepcopy(EVENT)
        e["id"] = i
        e["payload"]["invoice_id"] = f"INV-{i}"
        events.append(e)
    db.inbox().ingest(events, payload_registry)
    db.audit().append(
        [
            AuditEntry(
                "decision",
                f"portal:{i}",
                {
                    "decision": d,
                    "proposed": d,
                    "confidence": 0.5,
                    "model": "local",
                    "prompt_version": None,
                    "context_hash": f"hash-{i}",
                    "context_used": {"sources": {}},
                    "guardrails": {"flagged_by": []},
                    "confidence_breakdown": [{"name": "model_probability_calibrated", "value": 0.5}],
                },
                "b1",
            )
            for i, d in decisions.items()
        ]
    )
    db.inbox().set_states(
        [
            {"key": "portal:p-1", "status": "escalated", "reason": "confidence 0.50 below 0.75"},
            {"key": "portal:p-2", "status": "escalated", "reason": "confidence 0.50 below 0.75"},
            {"key": "portal:p-3", "status": "done", "reason": "paid", "outcome": {"decision": "approve"}},
        ],
        "b1",
    )
    db.review_queue().submit(
        "invoices",
        [
            {
                "key": f"portal:{i}",
                "entity_key": "V0001:INV-1",
                "confidence": 0.5,
                "reason": "confidence 0.50 below 0.75",
                "proposal": {"decision": decisions[i], "proposed": decisions[i], "invoice": EVENT["payload"]},
            }
            for i in ("p-1", "p-2")
        ],
        "b1",
    )
    return db


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_show_approve_once(queue, capsys):
    code, table, _ = _run(capsys, "review", "list")
    assert code == 0 and "portal:p-1" in table and "portal:p-2" in table and "hold" in table
    code, out, _ = _run(capsys, "review", "list", "--json")
    items = json.loads(out)
    assert [(it["event"], it["proposed"], it["status"]) for it in items] == [
        ("portal:p-1", "hold", "pending"),
        ("portal:p-2", "reject", "pending"),
    ]
    hold = items[0]["id"]
    code, out, _ = _run(capsys, "review", "show", str(hold))
    shown = json.loads(out)
    assert code == 0 and shown["decision_record"]["context_hash"] == "hash-p-1"
    assert shown["proposal"]["decision"] == "hold"

    code, out, _ = _run(capsys, "review", "approve", str(hold), "--by", "alice", "--note", "PO reopened later")
    assert code == 0 and json.loads(out)["by"] == "alice"
    code, out, err = _run(capsys, "review", "approve", str(hold), "--by", "bob")
    assert code == 3 and "already approved by alice" in err and out == ""
    code, out, _ = _run(capsys, "review", "list", "--status", "approved", "--json")
    assert [(it["id"], it["answer"]["by"]) for it in json.loads(out)] == [(hold, "alice")]
    code, out, _ = _run(capsys, "status", "--json")
    status = json.loads(out)
    assert status["review_items_pending"] == 1 and status["events_by_status"] == {"done": 2, "escalated": 1}
    assert queue.inbox().lookup(["portal:p-1"])["portal:p-1"]["outcome"]["reviewed_by"] == "alice"
    assert [(f["kind"], f["label"], f["reviewer"]) for f in queue.feedback().list("invoices")] == [
        ("approve", "hold", "alice")
    ]


def test_reject_and_correct(queue, capsys):
    items = json.loads(_run(capsys, "review", "list", "--json")[1])
    rejected = items[1]["id"]  # Bosun proposed reject
    code, _, err = _run(capsys, "review", "reject", str(rejected), "--by", "bob", "--reason", "fine after all")
    assert code == 2 and "label" in err
    code, out, _ = _run(
        capsys, "review", "reject", str(rejected), "--by", "bob", "--reason", "fine after all", "--label", "hold"
    )
    assert code == 0 and json.loads(out)["label"] == "hold"
    with pytest.raises(SystemExit):  # a rejection without a reason is not an answer
        main(["review", "reject", str(items[0]["id"]), "--by", "bob"])
    capsys.readouterr()

    code, out, _ = _run(
        capsys, "review", "correct", "portal:p-3", "--label", "reject", "--by", "carol", "--note", "credit note arrived"
    )
    assert code == 0 and json.loads(out)["decided"] == "approve"
    assert queue.inbox().lookup(["portal:p-3"])["portal:p-3"]["status"] == "done"  # feedback only
    assert _run(capsys, "review", "correct", "portal:p-3", "--label", "maybe", "--by", "carol")[0] == 2
    assert _run(capsys, "review", "correct", "portal:nope", "--label", "hold", "--by", "carol")[0] == 2
    assert _run(capsys, "review", "show", "424242")[0] == 2
    assert queue.feedback().labels("invoices") == {"portal:p-2": "hold", "portal:p-3": "reject"}
    kinds = [r["kind"] for r in queue.audit().records_for("portal:p-3")]
    assert kinds == ["decision", "review"]
