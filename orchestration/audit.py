"""The hash-chained audit log.

Each record's hash covers the previous record's hash and its own canonical JSON, so any
edit, deletion or reordering breaks `verify()`. Records are appended in bulk (one
statement per batch) while the chain still links every single record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from orchestration.db import audit_head, audit_log, engine_for, insert_ignoring_duplicates

GENESIS = "0" * 64


def canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def chain_hash(prev_hash: str, seq: int, kind: str, subject: str | None, body: str) -> str:
    h = hashlib.sha256()
    for part in (prev_hash, str(seq), kind, subject or "", body):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    kind: str           # event, decision, action, compensation, ...
    subject: str | None  # usually the event's idempotency key
    record: dict
    batch_id: str | None = None


@dataclass
class VerifyResult:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "records": self.records, "first_bad_seq": self.first_bad_seq, "problem": self.problem}


class AuditLog:
    def __init__(self, url: str):
        self.engine = engine_for(url)
        # The chain head exists before anyone appends, so concurrent first appends both
        # find a row to lock instead of racing to create it.
        with self.engine.begin() as conn:
            conn.execute(insert_ignoring_duplicates(self.engine, audit_head, ["id"]),
                         [{"id": 1, "seq": 0, "hash": GENESIS}])

    def append(self, entries: list[AuditEntry]) -> int:
        """Append entries as one chained block; returns the last sequence number."""
        if not entries:
            return 0
        with self.engine.begin() as conn:
            return self.append_in(conn, entries)

    def append_in(self, conn: sa.Connection, entries: list[AuditEntry]) -> int:
        """`append` inside the caller's transaction: the records commit with what they describe."""
        if not entries:
            return 0
        now = datetime.now(timezone.utc)
        seq, prev = self._lock_head(conn)
        rows = []
        for e in entries:
            seq += 1
            body = canonical(e.record)
            h = chain_hash(prev, seq, e.kind, e.subject, body)
            rows.append({"seq": seq, "recorded_at": now, "kind": e.kind, "batch_id": e.batch_id,
                         "subject": e.subject, "record": body, "prev_hash": prev, "hash": h})
            prev = h
        conn.execute(audit_log.insert(), rows)
        conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=prev))
        return seq

    @staticmethod
    def _lock_head(conn) -> tuple[int, str]:
        # Writing the head row first takes the write lock on SQLite and a row lock on
        # Postgres, so two runs appending at once serialise instead of forking the chain.
        conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=audit_head.c.seq))
        seq, h = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
        return int(seq), h

    def verify(self, page: int = 10_000) -> VerifyResult:
        prev, expected_seq, count = GENESIS, 1, 0
        with self.engine.connect() as conn:
            last = 0
            while True:
                rows = conn.execute(sa.select(audit_log).where(audit_log.c.seq > last)
                                    .order_by(audit_log.c.seq).limit(page)).mappings().all()
                if not rows:
                    break
                for r in rows:
                    seq = int(r["seq"])
                    if seq != expected_seq:
                        return VerifyResult(False, count, seq, f"sequence gap: expected {expected_seq}, found {seq}")
                    if r["prev_hash"] != prev:
                        return VerifyResult(False, count, seq, "prev_hash does not match the previous record")
                    if chain_hash(prev, seq, r["kind"], r["subject"], r["record"]) != r["hash"]:
                        return VerifyResult(False, count, seq, "record content does not match its hash")
                    prev, expected_seq, count, last = r["hash"], seq + 1, count + 1, seq
            head = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).first()
        if head is not None and (int(head.seq) != count or head.hash != prev):
            return VerifyResult(False, count, None, "chain head does not match the last record (records removed?)")
        return VerifyResult(True, count)

    def records_for(self, subject: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit_log.c.seq, audit_log.c.kind, audit_log.c.record)
                                .where(audit_log.c.subject == subject).order_by(audit_log.c.seq)).all()
        return [{"seq": int(s), "kind": k, "record": json.loads(r)} for s, k, r in rows]

    def count_by_kind(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {k: int(n) for k, n in conn.execute(
                sa.select(audit_log.c.kind, sa.func.count()).group_by(audit_log.c.kind))}
