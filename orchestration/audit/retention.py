"""Audit retention: archive the records older than the retention age, then prune them.

The pruned prefix of the chain goes to a gzip'd JSONL file (every column, hashes
included) under the archive directory, and a checkpoint row keeps the seq and hash of
the last pruned record plus the archive's SHA-256. `AuditLog.verify()` then walks the
remaining chain from the checkpoint, and `verify_archives()` re-walks every archive from
the previous checkpoint to its own, so the whole history stays verifiable.

A prune only ever removes a verified prefix: a broken chain is refused (archiving it would
launder the tampering), and rows newer than the cutoff stop the prefix even if older rows
follow them.

Archived rows keep their `key_id` (absent in archives written before the chain was keyed,
whose records are plain SHA-256), so an archive verifies with the same audit key.

The `audit_archive` asset runs it on a schedule (sensors/audit.py). It reads its resource
by key (`bosun_db`), as the engine never imports resources.
"""

import gzip
import hashlib
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from orchestration.audit.anchors import check_anchors, read_anchors
from orchestration.audit.chain import GENESIS, AuditLog, ChainWalker, _utc, checkpoint_chain_problem, rows_in_order
from orchestration.core import clock, settings
from orchestration.core.db import audit_checkpoints, audit_log
from orchestration.core.stored_values import StoredValues

DEFAULT_RETENTION_DAYS = 365


def retention_days() -> int:
    """BOSUN_AUDIT_RETENTION_DAYS: records older than this many days are archived and pruned."""
    days = int(os.environ.get("BOSUN_AUDIT_RETENTION_DAYS", DEFAULT_RETENTION_DAYS))
    if days < 1:
        raise ValueError(f"BOSUN_AUDIT_RETENTION_DAYS must be at least 1, not {days}")
    return days


def archive_dir() -> Path:
    """BOSUN_AUDIT_ARCHIVE_DIR, else BOSUN_HOME/audit-archive."""
    return Path(os.environ.get("BOSUN_AUDIT_ARCHIVE_DIR", str(settings.bosun_home() / "audit-archive"))).resolve()


class ChainBroken(Exception):
    pass


def _row_json(r) -> str:
    return json.dumps(
        {
            "seq": int(r["seq"]),
            "recorded_at": _utc(r["recorded_at"]).isoformat(),
            "kind": r["kind"],
            "batch_id": r["batch_id"],
            "subject": r["subject"],
            "record": r["record"],
            "prev_hash": r["prev_hash"],
            "hash": r["hash"],
            "key_id": r["key_id"],
        },
        separators=(",", ":"),
    )


def archive_and_prune(
    log: AuditLog, cutoff: datetime, directory: Path, max_records: int = 1_000_000, page: int = 10_000
) -> dict:
    """Archive and prune the chain's prefix of records recorded before `cutoff`."""
    cps = log.checkpoints()
    if checkpoint_chain_problem(cps):
        raise ChainBroken(checkpoint_chain_problem(cps)[1])
    last_cp = cps[-1] if cps else None
    start_seq, start_hash = (int(last_cp["last_seq"]) + 1, last_cp["last_hash"]) if last_cp else (1, GENESIS)
    walker = ChainWalker(start_seq, start_hash, log.key)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".audit-{os.getpid()}-{start_seq}.jsonl.gz.tmp"
    first = last = None
    try:
        with gzip.open(tmp, "wt", encoding="utf-8") as out, log.engine.connect() as conn:
            for r in rows_in_order(conn, page):
                if _utc(r["recorded_at"]) >= cutoff or walker.count >= max_records:
                    break
                if not walker.add(r):
                    f = walker.failure
                    raise ChainBroken(
                        f"refusing to archive a broken chain: record {f.first_bad_seq} ({f.subject}): {f.problem}"
                    )
                out.write(_row_json(r) + "\n")
                first = first if first is not None else int(r["seq"])
                last = int(r["seq"])
        if last is None:
            tmp.unlink(missing_ok=True)
            return {"pruned": 0, "cutoff": cutoff.isoformat(), "checkpoint_seq": start_seq - 1}
        path = directory / f"audit-{first:012d}-{last:012d}.jsonl.gz"
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, path)  # atomic: an archive is complete or absent
    finally:
        tmp.unlink(missing_ok=True)
    now = clock.now()
    with log.engine.begin() as conn:
        log._lock_head(conn)  # serialise with appenders and with another pruner
        latest = conn.execute(sa.select(sa.func.max(audit_checkpoints.c.last_seq))).scalar()
        if (latest or 0) != start_seq - 1:
            raise ChainBroken(f"another prune moved the checkpoint to {latest} meanwhile; nothing pruned here")
        conn.execute(
            audit_checkpoints.insert(),
            [
                {
                    "first_seq": first,
                    "last_seq": last,
                    "last_hash": walker.prev,
                    "prev_hash": start_hash,
                    "records": walker.count,
                    "archive": str(path),
                    "archive_sha256": digest,
                    "cutoff": cutoff,
                    "created_at": now,
                }
            ],
        )
        conn.execute(audit_log.delete().where(audit_log.c.seq >= first, audit_log.c.seq <= last))
    return {
        "pruned": walker.count,
        "first_seq": first,
        "last_seq": last,
        "checkpoint_hash": walker.prev,
        "archive": str(path),
        "archive_sha256": digest,
        "cutoff": cutoff.isoformat(),
    }


def verify_archives(log: AuditLog) -> dict:
    """Every checkpoint's archive: its digest, and its records' chain from the previous
    checkpoint's hash to its own."""
    cps = log.checkpoints()
    problem = checkpoint_chain_problem(cps)
    if problem:
        return {"ok": False, "archives": len(cps), "first_bad_seq": problem[0], "problem": problem[1]}
    records = 0
    for cp in cps:
        path = Path(cp["archive"])
        if not path.exists():
            return {
                "ok": False,
                "archives": len(cps),
                "first_bad_seq": int(cp["first_seq"]),
                "problem": f"archive {path} of records {cp['first_seq']}..{cp['last_seq']} is missing",
            }
        if hashlib.sha256(path.read_bytes()).hexdigest() != cp["archive_sha256"]:
            return {
                "ok": False,
                "archives": len(cps),
                "first_bad_seq": int(cp["first_seq"]),
                "problem": f"archive {path} does not match the digest its checkpoint recorded",
            }
        # Archives written before the chain was keyed have no key_id: plain SHA-256 records.
        walker = ChainWalker(int(cp["first_seq"]), cp["prev_hash"], log.key)
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not walker.add(json.loads(line)):
                    f = walker.failure
                    return {
                        "ok": False,
                        "archives": len(cps),
                        "first_bad_seq": f.first_bad_seq,
                        "subject": f.subject,
                        "problem": f"in {path}: {f.problem}",
                    }
        if walker.expected - 1 != int(cp["last_seq"]) or walker.prev != cp["last_hash"]:
            return {
                "ok": False,
                "archives": len(cps),
                "first_bad_seq": walker.expected,
                "problem": f"archive {path} ends at {walker.expected - 1}, its checkpoint at {cp['last_seq']}",
            }
        records += walker.count
    return {"ok": True, "archives": len(cps), "records": records}


def read_archived(log: AuditLog, kinds: tuple[str, ...] = ("decision",)) -> list[dict]:
    """Archived records of these kinds, oldest first (for replay over pruned history)."""
    out = []
    for cp in log.checkpoints():
        with gzip.open(cp["archive"], "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                if r["kind"] in kinds:
                    out.append(
                        {
                            **r,
                            "recorded_at": datetime.fromisoformat(r["recorded_at"]),
                            "record": json.loads(r["record"]),
                        }
                    )
    return out


@dg.asset(required_resource_keys={"bosun_db"}, group_name="audit", kinds={"sql"})
def audit_archive(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The audit log's records older than BOSUN_AUDIT_RETENTION_DAYS, archived (gzip'd JSONL
    with their hashes, under BOSUN_AUDIT_ARCHIVE_DIR) and pruned behind a checkpoint."""
    log = context.resources.bosun_db.audit()
    days = retention_days()
    cutoff = clock.now() - timedelta(days=days)
    try:
        out = archive_and_prune(log, cutoff, archive_dir())
    except ChainBroken as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err
    check = log.verify()
    if not check.ok:
        raise dg.Failure(
            description=f"audit chain broken after prune at record {check.first_bad_seq}: {check.problem}",
            allow_retries=False,
        )
    # The heads the batches published in this instance's event log: a chain re-hashed by
    # someone holding the key still disagrees with them.
    anchors = check_anchors(log, read_anchors(context.instance), check.from_seq, log.head()[0])
    if not anchors["ok"]:
        raise dg.Failure(
            description=f"audit chain disagrees with its anchors: {anchors['problem']}", allow_retries=False
        )
    # Values old partitions left in the database (orchestration/core/stored_values.py) go with
    # the audit records of their time.
    values_pruned = StoredValues(context.resources.bosun_db.resolved_url).prune_partitions(cutoff)
    return dg.MaterializeResult(
        metadata={
            "retention_days": days,
            "pruned": out["pruned"],
            "cutoff": out["cutoff"],
            "anchors_checked": anchors["checked"],
            "stored_values_pruned": values_pruned,
            "checkpoint_seq": out.get("last_seq", out.get("checkpoint_seq")),
            "remaining_records": check.records,
            "archive": out.get("archive") or "",
            "archive_sha256": out.get("archive_sha256") or "",
        }
    )
