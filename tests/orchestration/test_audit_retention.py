"""Retention: records older than the configured age are archived with their hashes and
pruned behind a checkpoint; the rest of the chain, and the archive, still verify, and
tampering is still found. Records are backdated by SQL."""

import gzip
import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
import sqlalchemy as sa
from bosun_testing import empty_audit_tables

from orchestration.audit.chain import AuditEntry, AuditLog
from orchestration.audit.retention import ChainBroken, archive_and_prune, archive_dir, verify_archives
from orchestration.core import settings
from orchestration.core.db import audit_log

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

NOW = datetime.now(timezone.utc)


@pytest.fixture(params=["sqlite", "postgres"])
def log(request, bosun_home, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("BOSUN_DATABASE_URL", request.getfixturevalue("pg_module_url"))
        empty_audit_tables(settings.database_url())
    log = AuditLog(settings.database_url())
    log.append([AuditEntry("decision", f"evt-{i}", {"i": i}, "b1") for i in range(1, 11)])
    return log


def backdate(log, upto_seq, days):
    with log.engine.begin() as conn:
        conn.execute(
            audit_log.update().where(audit_log.c.seq <= upto_seq).values(recorded_at=NOW - timedelta(days=days))
        )


def seqs(log):
    with log.engine.connect() as conn:
        return [int(s) for s in conn.execute(sa.select(audit_log.c.seq).order_by(audit_log.c.seq)).scalars()]


def test_old_records_are_archived_and_pruned_and_the_chain_still_verifies(log, bosun_home):
    backdate(log, 4, days=400)
    out = archive_and_prune(log, NOW - timedelta(days=365), archive_dir())
    assert (out["pruned"], out["first_seq"], out["last_seq"]) == (4, 1, 4)
    assert seqs(log) == list(range(5, 11))
    result = log.verify()
    assert result.ok and result.records == 6 and result.from_seq == 5
    # The archive holds the pruned rows with their hashes, and verifies against the checkpoint.
    lines = [json.loads(x) for x in gzip.open(out["archive"], "rt")]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4] and all(len(r["hash"]) == 64 for r in lines)
    assert str(bosun_home / "audit-archive") in out["archive"]
    assert verify_archives(log) == {"ok": True, "archives": 1, "records": 4}
    # A second prune continues from the checkpoint; nothing older is left twice.
    backdate(log, 7, days=400)
    assert archive_and_prune(log, NOW - timedelta(days=365), archive_dir())["pruned"] == 3
    assert log.verify().ok and verify_archives(log)["records"] == 7
    assert archive_and_prune(log, NOW - timedelta(days=365), archive_dir())["pruned"] == 0


def test_tampering_is_still_found_after_a_prune(log):
    backdate(log, 4, days=400)
    archive_and_prune(log, NOW - timedelta(days=365), archive_dir())
    with log.engine.begin() as conn:  # the first remaining record deleted
        conn.execute(sa.text("DELETE FROM bosun_audit_log WHERE seq = 5"))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_altered_remaining_record_and_reinserted_pruned_record_are_named(log):
    backdate(log, 4, days=400)
    archive_and_prune(log, NOW - timedelta(days=365), archive_dir())
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE bosun_audit_log SET record = '{}' WHERE seq = 10"))
    assert (log.verify().first_bad_seq, log.verify().subject) == (10, "evt-10")
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE bosun_audit_log SET record = :r WHERE seq = 10"), {"r": '{"i":10}'})
        conn.execute(
            sa.text(
                "INSERT INTO bosun_audit_log (seq, recorded_at, kind, subject, record, prev_hash, hash) "
                "VALUES (2, CURRENT_TIMESTAMP, 'decision', 'evt-2', '{}', 'x', 'y')"
            )
        )
    assert (log.verify().first_bad_seq, log.verify().subject) == (2, "evt-2")


def test_tampered_archive_is_named(log):
    backdate(log, 4, days=400)
    out = archive_and_prune(log, NOW - timedelta(days=365), archive_dir())
    lines = [json.loads(x) for x in gzip.open(out["archive"], "rt")]
    lines[2]["record"] = '{"i":99}'
    with gzip.open(out["archive"], "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in lines)
    assert "digest" in verify_archives(log)["problem"]
    # Even with the checkpoint's digest updated to match, the chain inside names record 3.
    import hashlib
    from pathlib import Path

    with log.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE bosun_audit_checkpoints SET archive_sha256 = :d"),
            {"d": hashlib.sha256(Path(out["archive"]).read_bytes()).hexdigest()},
        )
    found = verify_archives(log)
    assert (found["ok"], found["first_bad_seq"], found["subject"]) == (False, 3, "evt-3")


def test_a_broken_chain_is_not_archived(log):
    backdate(log, 4, days=400)
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE bosun_audit_log SET record = '{}' WHERE seq = 2"))
    with pytest.raises(ChainBroken, match="record 2"):
        archive_and_prune(log, NOW - timedelta(days=365), archive_dir())
    assert seqs(log) == list(range(1, 11)) and log.checkpoints() == []


def test_a_newer_record_stops_the_prefix(log):
    backdate(log, 6, days=400)
    with log.engine.begin() as conn:  # seq 3 is recent: 4..6 stay although they are old
        conn.execute(audit_log.update().where(audit_log.c.seq == 3).values(recorded_at=NOW))
    assert archive_and_prune(log, NOW - timedelta(days=365), archive_dir())["last_seq"] == 2


@pytest.mark.parametrize("log", ["sqlite"], indirect=True)
def test_the_scheduled_asset_prunes_by_the_configured_age(log, monkeypatch, tmp_path, capsys):
    from orchestration.cli import main
    from orchestration.definitions import build_definitions

    monkeypatch.setenv("BOSUN_AUDIT_RETENTION_DAYS", "30")
    backdate(log, 5, days=31)
    defs = build_definitions()  # with this test's environment
    schedule = defs.resolve_schedule_def("audit_retention_daily")
    assert schedule.execution_timezone == "Europe/Berlin" and schedule.job_name == "audit_retention_job"
    (tmp_path / "dg").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dg")) as instance:
        result = defs.resolve_job_def("audit_retention_job").execute_in_process(instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("audit_archive")[0].metadata
    assert (meta["pruned"].value, meta["checkpoint_seq"].value, meta["retention_days"].value) == (5, 5, 30)
    assert main(["audit", "verify", "--archives"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["from_seq"] == 6 and out["archives"]["records"] == 5
