"""The hash chain, and tampering with it by raw SQL on SQLite and on Postgres: every
altered, deleted or inserted row is found, and `verify` names the first bad record."""

import json

import pytest
import sqlalchemy as sa
from bosun_testing import empty_audit_tables

from orchestration.audit import chain
from orchestration.audit.chain import AuditEntry, AuditLog, canonical, chain_hash
from orchestration.core import settings
from orchestration.core.db import audit_log

N = 6


@pytest.fixture(params=["sqlite", "postgres"])
def audit_url(request, bosun_home, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("BOSUN_DATABASE_URL", request.getfixturevalue("pg_module_url"))
        empty_audit_tables(settings.database_url())
    return settings.database_url()


def _entries(n, batch="b1"):
    return [AuditEntry("decision", f"evt-{i}", {"i": i, "decision": "approve"}, batch) for i in range(1, n + 1)]


@pytest.fixture
def log(audit_url):
    log = AuditLog(audit_url)
    log.append(_entries(3))
    log.append(_entries(N)[3:])
    assert log.verify().ok
    return log


def sql(log, statement, **params):
    with log.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def row(log, seq):
    with log.engine.connect() as conn:
        return conn.execute(sa.select(audit_log).where(audit_log.c.seq == seq)).mappings().one()


def forged(log, seq, prev_hash, subject="evt-forged"):
    """A row an attacker computes correctly: the right algorithm, the right link, even the
    audit key (the structure of the chain still gives it away)."""
    body = canonical({"i": 99, "decision": "approve"})
    return {
        "seq": seq,
        "kind": "decision",
        "subject": subject,
        "record": body,
        "prev_hash": prev_hash,
        "hash": chain_hash(prev_hash, seq, "decision", subject, body, log.key),
        "key_id": log.key.key_id,
    }


def insert(log, r):
    sql(
        log,
        "INSERT INTO bosun_audit_log (seq, recorded_at, kind, batch_id, subject, record, prev_hash, hash, key_id) "
        "VALUES (:seq, CURRENT_TIMESTAMP, :kind, 'b1', :subject, :record, :prev_hash, :hash, :key_id)",
        **{"key_id": None, **r},
    )


def shift_from(log, seq):
    # Two steps: a unique key does not survive "seq = seq + 1" in one pass on Postgres.
    sql(log, "UPDATE bosun_audit_log SET seq = seq + 1000 WHERE seq >= :s", s=seq)
    sql(log, "UPDATE bosun_audit_log SET seq = seq - 999 WHERE seq >= :s", s=seq + 1000)


def bad(log):
    result = log.verify()
    assert not result.ok
    return result


def test_chain_verifies_across_appends(audit_url):
    log = AuditLog(audit_url)
    assert log.append(_entries(3)) == 3
    assert log.append(_entries(2, "b2")) == 5
    result = log.verify()
    assert result.ok and result.records == 5


def test_a_generator_longer_than_a_chunk_appends_as_one_chained_block(audit_url, monkeypatch):
    """A batch's entries are hashed and inserted a chunk at a time (memory), still one block: one
    head, every record linked, in order, and an empty generator appends nothing."""
    monkeypatch.setattr(chain, "APPEND_CHUNK", 4)
    log = AuditLog(audit_url)
    assert log.append_head(e for e in []) == (0, "")
    seq, head = log.append_head(e for e in _entries(10))
    assert seq == 10 and log.head() == (10, head)
    with log.engine.connect() as conn:
        subjects = conn.execute(sa.select(audit_log.c.subject).order_by(audit_log.c.seq)).scalars().all()
    assert subjects == [f"evt-{i}" for i in range(1, 11)]
    result = log.verify()
    assert result.ok and result.records == 10


@pytest.mark.parametrize("seq", [1, 3, N])
def test_altered_record_is_named(log, seq):
    sql(log, "UPDATE bosun_audit_log SET record = :r WHERE seq = :s", r='{"decision":"reject"}', s=seq)
    result = bad(log)
    assert (result.first_bad_seq, result.subject) == (seq, f"evt-{seq}")
    assert "altered" in result.problem


@pytest.mark.parametrize("seq", [1, 3, N])
def test_rewritten_record_with_a_recomputed_hash_is_named(log, seq):
    r = row(log, seq)
    body = canonical({"i": seq, "decision": "reject"})
    sql(
        log,
        "UPDATE bosun_audit_log SET record = :b, hash = :h WHERE seq = :s",
        b=body,
        s=seq,
        h=chain_hash(r["prev_hash"], seq, r["kind"], r["subject"], body, log.key),
    )
    result = bad(log)
    assert (result.first_bad_seq, result.subject) == (seq, f"evt-{seq}")
    assert "rewritten" in result.problem


def test_altered_subject_or_kind_is_named(log):
    sql(log, "UPDATE bosun_audit_log SET subject = 'evt-other' WHERE seq = 2")
    assert bad(log).first_bad_seq == 2


@pytest.mark.parametrize("seq", [1, 3, N])
def test_deleted_record_is_named(log, seq):
    sql(log, "DELETE FROM bosun_audit_log WHERE seq = :s", s=seq)
    result = bad(log)
    assert result.first_bad_seq == seq and "missing" in result.problem


def test_deleted_and_renumbered_records_are_found(log):
    sql(log, "DELETE FROM bosun_audit_log WHERE seq = 3")
    sql(log, "UPDATE bosun_audit_log SET seq = seq - 1 WHERE seq > 3")  # ascending is safe here
    sql(log, "UPDATE bosun_audit_head SET seq = seq - 1")
    result = bad(log)
    assert result.first_bad_seq == 3  # the first record whose place no longer matches its hash


def test_inserted_first_record_is_named(log):
    shift_from(log, 1)
    insert(log, forged(log, 1, "0" * 64))
    result = bad(log)
    assert (result.first_bad_seq, result.subject) == (1, "evt-forged")
    assert "inserted" in result.problem


def test_inserted_middle_record_with_a_valid_hash_is_named(log):
    shift_from(log, 4)
    insert(log, forged(log, 4, row(log, 3)["hash"]))
    result = bad(log)
    assert (result.first_bad_seq, result.subject) == (4, "evt-forged")
    assert "inserted" in result.problem


def test_inserted_last_record_is_named(log):
    insert(log, forged(log, N + 1, row(log, N)["hash"]))
    result = bad(log)
    assert (result.first_bad_seq, result.subject) == (N + 1, "evt-forged")
    assert "past the chain head" in result.problem


def test_inserted_record_before_the_start_is_named(log):
    insert(log, forged(log, 0, "0" * 64))
    result = bad(log)
    assert (result.first_bad_seq, result.subject) == (0, "evt-forged")


def test_cli_exits_1_and_names_the_first_bad_record(log, audit_url, capsys, monkeypatch):
    from orchestration.cli import main

    monkeypatch.setenv("BOSUN_DATABASE_URL", audit_url)
    assert main(["audit", "verify"]) == 0
    sql(log, "UPDATE bosun_audit_log SET record = '{}' WHERE seq = 4")
    capsys.readouterr()
    assert main(["audit", "verify"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert (out["ok"], out["first_bad_seq"], out["subject"]) == (False, 4, "evt-4")
    assert "record 4 (decision evt-4)" in captured.err


def test_records_for_a_subject_in_order(bosun_home):
    log = AuditLog(settings.database_url())
    log.append(
        [
            AuditEntry("decision", "k", {"a": 1}),
            AuditEntry("action", "k", {"b": 2}),
            AuditEntry("decision", "other", {}),
        ]
    )
    assert [r["kind"] for r in log.records_for("k")] == ["decision", "action"]
    with log.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one() == 3


def test_search_filters_decision_records(audit_url):
    log = AuditLog(audit_url)

    def rec(e, d, g, m):
        return {
            "entity_key": e,
            "decision": d,
            "route": "act",
            "model": m,
            "guardrails": {"blocked_by": g, "flagged_by": []},
        }

    log.append(
        [
            AuditEntry("decision", "a", rec("V1/INV1", "approve", [], "local")),
            AuditEntry("decision", "b", rec("V1/INV2", "reject", ["unknown_vendor"], "local")),
            AuditEntry("decision", "c", rec("V2/INV3", "hold", [], "gpt-x")),
            AuditEntry("action", "a", {"step": "ledger", "status": "done"}),
        ]
    )
    assert [r["subject"] for r in log.search(entity="V1/INV2")] == ["b"]
    assert [r["subject"] for r in log.search(guardrail="unknown_vendor")] == ["b"]
    assert [r["subject"] for r in log.search(model="gpt-x")] == ["c"]
    assert [r["subject"] for r in log.search(decision="approve")] == ["a"]
    assert [r["kind"] for r in log.search(kinds=["action"])] == ["action"]
    assert len(log.search(limit=2)) == 2
