import sqlalchemy as sa

from orchestration import settings
from orchestration.audit import AuditEntry, AuditLog
from orchestration.db import audit_log


def _log(n, batch="b1"):
    return [AuditEntry("decision", f"s:{i}", {"i": i, "decision": "approve"}, batch) for i in range(n)]


def test_chain_verifies_across_appends(bosun_home):
    log = AuditLog(settings.database_url())
    assert log.append(_log(3)) == 3
    assert log.append(_log(2, "b2")) == 5
    result = log.verify()
    assert result.ok and result.records == 5


def test_edited_record_is_detected(bosun_home):
    log = AuditLog(settings.database_url())
    log.append(_log(4))
    with log.engine.begin() as conn:
        conn.execute(audit_log.update().where(audit_log.c.seq == 2).values(record='{"i":1,"decision":"reject"}'))
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2


def test_deleted_records_are_detected(bosun_home):
    log = AuditLog(settings.database_url())
    log.append(_log(4))
    with log.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 4))
    assert not log.verify().ok
    with log.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 2))
    assert log.verify().first_bad_seq == 3


def test_records_for_a_subject_in_order(bosun_home):
    log = AuditLog(settings.database_url())
    log.append([AuditEntry("decision", "k", {"a": 1}), AuditEntry("action", "k", {"b": 2}),
                AuditEntry("decision", "other", {})])
    assert [r["kind"] for r in log.records_for("k")] == ["decision", "action"]
    with log.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one() == 3
