"""The anchored audit: a keyed chain (HMAC under BOSUN_AUDIT_KEY or the embedded default key)
and the chain head published in Dagster's event log on every batch.

The attack tested is the one a plain hash chain cannot see: rewrite a decision record, then
recompute every later hash and the head. Without the key (plain SHA-256) `verify` names the
record; with the key, the heads the batches published disagree with the rewritten chain.
"""

import json
import os
import stat

import dagster as dg
import pytest
import sqlalchemy as sa
from bosun_testing import empty_audit_tables

from orchestration.audit.anchors import anchor_metadata, check_anchors, read_anchors
from orchestration.audit.chain import GENESIS, AuditEntry, AuditLog, canonical, chain_hash
from orchestration.audit.key import KEY_ENV, current_key, key_file
from orchestration.core import settings
from orchestration.core.db import audit_head, audit_log

SECRET = "test-audit-key-0123456789abcdef"


@pytest.fixture(params=["sqlite", "postgres"])
def audit_url(request, bosun_home, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    if request.param == "postgres":
        monkeypatch.setenv("BOSUN_DATABASE_URL", request.getfixturevalue("pg_module_url"))
        empty_audit_tables(settings.database_url())
    return settings.database_url()


def _entries(n, batch="b1", start=1):
    return [AuditEntry("decision", f"evt-{i}", {"i": i, "decision": "approve"}, batch) for i in range(start, start + n)]


def rewrite_from(log, seq, key=None, downgrade=False):
    """What an attacker with write access does: change record `seq`'s decision, then
    recompute every later hash and link and the head (plain SHA-256 unless given the key)."""
    with log.engine.begin() as conn:
        rows = (
            conn.execute(sa.select(audit_log).where(audit_log.c.seq >= seq).order_by(audit_log.c.seq)).mappings().all()
        )
        prev = conn.execute(sa.select(audit_log.c.hash).where(audit_log.c.seq == seq - 1)).scalar() or GENESIS
        for r in rows:
            body = r["record"].replace("approve", "reject") if r["seq"] == seq else r["record"]
            h = chain_hash(prev, r["seq"], r["kind"], r["subject"], body, key)
            key_id = None if downgrade else r["key_id"]
            conn.execute(
                audit_log.update()
                .where(audit_log.c.seq == r["seq"])
                .values(record=body, prev_hash=prev, hash=h, key_id=key_id)
            )
            prev = h
        conn.execute(audit_head.update().values(hash=prev))


@pytest.mark.parametrize("downgrade", [False, True], ids=["keeps_key_id", "marks_records_unkeyed"])
def test_rewrite_without_the_key_fails_naming_the_record(audit_url, downgrade):
    log = AuditLog(audit_url)
    log.append(_entries(3))
    log.append(_entries(3, "b2", start=4))
    assert log.verify().ok
    rewrite_from(log, 3, key=None, downgrade=downgrade)
    result = log.verify()
    assert not result.ok
    assert (result.first_bad_seq, result.subject, result.kind) == (3, "evt-3", "decision")
    assert "without the audit key" in result.problem


def test_the_same_rewrite_with_the_key_passes_the_chain_alone(audit_url):
    # The limit of a keyed chain: whoever holds the key can re-hash it. The anchors catch that.
    log = AuditLog(audit_url)
    log.append(_entries(6))
    rewrite_from(log, 3, key=log.key)
    assert log.verify().ok


def test_records_from_before_the_key_still_verify_up_to_the_keyed_start(audit_url):
    log = AuditLog(audit_url)
    prev = GENESIS
    with log.engine.begin() as conn:  # three records as the unkeyed version wrote them
        for seq in (1, 2, 3):
            body = canonical({"i": seq})
            h = chain_hash(prev, seq, "decision", f"old-{seq}", body)
            conn.execute(
                audit_log.insert().values(
                    seq=seq,
                    recorded_at=sa.func.current_timestamp(),
                    kind="decision",
                    subject=f"old-{seq}",
                    record=body,
                    prev_hash=prev,
                    hash=h,
                )
            )
            prev = h
        conn.execute(audit_head.update().values(seq=3, hash=prev))
    assert log.append(_entries(2, start=4)) == 5
    result = log.verify()
    assert result.ok and (result.legacy_records, result.keyed_from, result.records) == (3, 4, 5)
    assert result.key_id == log.key.key_id

    rewrite_from(log, 2)  # a rewrite inside the legacy prefix still breaks the link to the keyed part
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4 and "without the audit key" in result.problem


def test_legacy_and_keyed_records_archive_and_verify(bosun_home, monkeypatch, tmp_path):
    from datetime import timedelta

    from orchestration.audit.retention import archive_and_prune, verify_archives
    from orchestration.core import clock

    url = settings.database_url()
    log = AuditLog(url)
    body = canonical({"i": 1})
    h = chain_hash(GENESIS, 1, "decision", "old-1", body)
    with log.engine.begin() as conn:
        conn.execute(
            audit_log.insert().values(
                seq=1,
                recorded_at=clock.now() - timedelta(days=3),
                kind="decision",
                subject="old-1",
                record=body,
                prev_hash=GENESIS,
                hash=h,
            )
        )
        conn.execute(audit_head.update().values(seq=1, hash=h))
    log.append(_entries(3, start=2))
    out = archive_and_prune(log, clock.now() + timedelta(seconds=1), tmp_path / "archive", max_records=2)
    assert out["pruned"] == 2
    assert verify_archives(log)["ok"] and log.verify().ok


def test_embedded_key_file_is_0600_generated_once_with_a_warning(bosun_home, caplog):
    assert not key_file().exists()
    with caplog.at_level("WARNING"):
        log = AuditLog(settings.database_url())
        log.append(_entries(2))
        AuditLog(settings.database_url()).append(_entries(1, start=3))
    path = key_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    warnings = [r for r in caplog.records if KEY_ENV in r.getMessage()]
    assert len(warnings) == 1
    secret = path.read_text().strip()
    assert secret not in caplog.text and log.key.key_id not in secret
    assert secret not in repr(log.key)
    assert AuditLog(settings.database_url()).verify().ok  # the same key, read back


def test_key_from_the_environment_writes_no_file_and_is_never_shown(bosun_home, monkeypatch, capsys, caplog):
    from orchestration.cli import main
    from resources.database import BosunDatabase

    monkeypatch.setenv(KEY_ENV, SECRET)
    AuditLog(settings.database_url()).append(_entries(2))
    assert not key_file().exists()
    assert main(["audit", "verify"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["key_id"] == current_key().key_id
    assert SECRET not in captured.out + captured.err + caplog.text
    assert SECRET not in repr(BosunDatabase(audit_key=SECRET))
    monkeypatch.setenv(KEY_ENV, "another-key-0123456789abcdef")  # the key changed: said so, not "altered"
    result = AuditLog(settings.database_url()).verify()
    assert not result.ok and result.first_bad_seq == 1 and "BOSUN_AUDIT_KEY changed" in result.problem


# ---- anchors in Dagster's event log ----------------------------------------------------

BATCHES = dg.StaticPartitionsDefinition(["b1", "b2", "b3"])


@dg.asset(partitions_def=BATCHES)
def audited_batch(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """A batch's last asset, as a workflow writes it: append, then publish the head."""
    batch = context.partition_key
    seq, head = AuditLog(settings.database_url()).append_head(
        [AuditEntry("decision", f"{batch}-{i}", {"batch": batch, "decision": "approve"}, batch) for i in (1, 2)]
    )
    return dg.MaterializeResult(metadata=anchor_metadata(seq, head))


@pytest.fixture
def anchored(bosun_home, tmp_path, monkeypatch):
    """Three batches run through Dagster, each publishing its head: (log, instance). The
    anchors live in Dagster's storage, so Bosun's Postgres adds nothing here."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    audit_url = settings.database_url()
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster"), set_dagster_home=False) as instance:
        for batch in ("b1", "b2", "b3"):
            assert dg.materialize([audited_batch], instance=instance, partition_key=batch).success
        log = AuditLog(audit_url)
        assert log.verify().ok
        yield log, instance


def test_anchors_are_read_back_per_batch(anchored):
    log, instance = anchored
    anchors = read_anchors(instance)
    assert [(a.seq, a.batch) for a in anchors] == [(2, "b1"), (4, "b2"), (6, "b3")]
    assert check_anchors(log, anchors, 1, log.head()[0]) == {
        "ok": True,
        "anchors": 3,
        "checked": 3,
        "before_checkpoint": 0,
        "latest_anchor_seq": 6,
    }


def test_full_rewrite_with_the_key_disagrees_with_the_anchor_of_its_batch(anchored, tmp_path, monkeypatch, capsys):
    from orchestration.cli import main

    log, instance = anchored
    rewrite_from(log, 1, key=log.key)  # from the very first record, with the key: the chain alone passes
    assert log.verify().ok
    result = check_anchors(log, read_anchors(instance), 1, log.head()[0])
    assert not result["ok"] and (result["first_bad_seq"], result["batch"]) == (2, "b1")
    assert "disagrees with the anchor of batch b1" in result["problem"]

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    capsys.readouterr()
    assert main(["audit", "verify"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["anchors"]["batch"] == "b1"
    assert "disagrees with the anchor of batch b1" in captured.err

    monkeypatch.delenv("DAGSTER_HOME")
    assert main(["audit", "verify"]) == 0  # what the chain alone can say, and that it had no anchors
    assert "no anchors found" in json.loads(capsys.readouterr().out)["anchors"]["note"]


def test_truncated_chain_is_behind_its_latest_anchor(anchored):
    log, instance = anchored
    with log.engine.begin() as conn:  # the last batch's records deleted, the head moved back
        h = conn.execute(sa.select(audit_log.c.hash).where(audit_log.c.seq == 4)).scalar_one()
        conn.execute(audit_log.delete().where(audit_log.c.seq > 4))
        conn.execute(audit_head.update().values(seq=4, hash=h))
    assert log.verify().ok
    result = check_anchors(log, read_anchors(instance), 1, log.head()[0])
    assert not result["ok"] and result["batch"] == "b3" and "records were deleted" in result["problem"]
