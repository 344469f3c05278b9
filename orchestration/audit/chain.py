"""The hash-chained audit log.

Each record's hash covers the previous record's hash and its own canonical JSON, so any
edit, deletion or reordering breaks `verify()`. Records are appended in bulk (one
statement per batch) while the chain still links every single record.

The hash is an HMAC-SHA256 under the audit key (orchestration/audit/key.py), named per
record by `key_id`: someone who can write the tables but does not hold the key cannot
recompute the chain after rewriting a record. Records written before the key existed
(`key_id` NULL) are plain SHA-256 and still verify, but only before the first keyed one: an
unkeyed record after it is a rewrite by someone without the key. A chain rewritten from its
very first record is caught by the heads published outside the database
(orchestration/audit/anchors.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

import sqlalchemy as sa

from orchestration.audit.key import AuditKey, current_key
from orchestration.core import clock
from orchestration.core.db import audit_checkpoints, audit_head, audit_log, engine_for, insert_ignoring_duplicates

GENESIS = "0" * 64
# Entries are hashed and inserted this many at a time within one append: a batch's thousands
# of records never sit in memory as entries, canonical JSON and rows all at once (the peak of a
# batch run's memory was its audit append; benchmarks/daemon_path.py's RSS figure).
APPEND_CHUNK = 500


def canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def chain_message(prev_hash: str, seq: int, kind: str, subject: str | None, body: str) -> bytes:
    return b"".join(part.encode() + b"\x1f" for part in (prev_hash, str(seq), kind, subject or "", body))


def chain_hash(prev_hash: str, seq: int, kind: str, subject: str | None, body: str, key: AuditKey | None = None) -> str:
    """The record's hash: HMAC-SHA256 under `key`, plain SHA-256 without (records written
    before the chain was keyed)."""
    message = chain_message(prev_hash, seq, kind, subject, body)
    return key.mac(message) if key is not None else hashlib.sha256(message).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    kind: str  # event, decision, action, compensation, ...
    subject: str | None  # usually the event's idempotency key
    record: dict
    batch_id: str | None = None


def check_results_entry(batch_id: str, run_id: str | None, results) -> AuditEntry:
    """One record of a batch's asset check results (Dagster AssetCheckResult objects)."""
    checks = {}
    for r in results:
        meta = {k: getattr(v, "value", v) for k, v in (r.metadata or {}).items()}
        checks[r.check_name] = {
            "passed": bool(r.passed),
            "severity": str(getattr(r.severity, "value", r.severity)),
            "metadata": meta,
        }
    return AuditEntry("check", batch_id, {"run_id": run_id, "checks": checks}, batch_id)


@dataclass
class VerifyResult:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str | None = None
    subject: str | None = None  # the first bad record's subject, when it still exists
    kind: str | None = None
    from_seq: int = 1  # the chain was verified from here (after the latest checkpoint)
    archives: dict | None = None  # verify_archives() when asked for
    key_id: str | None = None  # the audit key the chain was verified with (its id, never the key)
    keyed_from: int | None = None  # the first keyed record
    legacy_records: int = 0  # plain SHA-256 records (written before the chain was keyed)
    anchors: dict | None = None  # audit_anchors.check_anchors() when asked for

    def as_dict(self) -> dict:
        out = {
            "ok": self.ok,
            "records": self.records,
            "first_bad_seq": self.first_bad_seq,
            "subject": self.subject,
            "kind": self.kind,
            "problem": self.problem,
            "from_seq": self.from_seq,
            "key_id": self.key_id,
            "keyed_from": self.keyed_from,
            "legacy_records": self.legacy_records,
        }
        if self.archives is not None:
            out["archives"] = self.archives
        if self.anchors is not None:
            out["anchors"] = self.anchors
        return out


class ChainWalker:
    """Checks records one at a time in seq order, from a starting seq and hash.

    The first failure names the first bad record: an altered record fails its own hash; a
    deleted one leaves a gap in seq; an inserted one (even with a correctly computed hash)
    is named because the record after it links past it to the one before. A record is
    hashed as its `key_id` says: the configured key's HMAC, or plain SHA-256 (NULL) only
    before the first keyed record; another key's id fails (the key changed or was lost).
    """

    def __init__(self, start_seq: int = 1, start_hash: str = GENESIS, key: AuditKey | None = None):
        self.expected, self.prev, self.prev_prev = start_seq, start_hash, None
        self.key = key
        self.previous: dict | None = None
        self.count = 0
        self.legacy = 0  # plain SHA-256 records verified
        self.keyed_from: int | None = None  # the first keyed record's seq
        self.failure: VerifyResult | None = None

    def _fail(self, seq, problem, row=None) -> bool:
        self.failure = VerifyResult(
            False, self.count, seq, problem, row and row.get("subject"), row and row.get("kind")
        )
        return False

    def _hash(self, r: dict, seq: int) -> str:
        key = self.key if r.get("key_id") else None
        return chain_hash(r["prev_hash"], seq, r["kind"], r["subject"], r["record"], key)

    def add(self, r: dict) -> bool:
        seq = int(r["seq"])
        if seq < self.expected:
            return self._fail(
                seq,
                f"unexpected record {seq} before the chain's next seq {self.expected} "
                "(inserted, or not pruned with its checkpoint)",
                r,
            )
        if seq > self.expected:
            return self._fail(
                self.expected,
                f"record {self.expected} is missing (deleted): the next record "
                f"present is {seq} ({r['kind']} {r['subject']})",
            )
        key_id = r.get("key_id")
        if key_id and (self.key is None or key_id != self.key.key_id):
            return self._fail(
                seq,
                f"record {seq} was written with audit key {key_id}, not the configured key "
                f"{self.key.key_id if self.key else '(none)'}: forged, or BOSUN_AUDIT_KEY changed",
                r,
            )
        if not key_id and self.keyed_from is not None:
            return self._fail(
                seq,
                f"record {seq} is hashed with plain SHA-256 although the chain is keyed from "
                f"record {self.keyed_from}: rewritten by someone without the audit key",
                r,
            )
        hashed_as = lambda s: self._hash(r, s) == r["hash"]  # noqa: E731
        self_consistent = hashed_as(seq)
        if r["prev_hash"] != self.prev:
            if (
                self.previous is not None
                and r["prev_hash"] == self.prev_prev
                and (self_consistent or hashed_as(seq - 1))
            ):
                # This record is intact (perhaps renumbered by one) and links past its predecessor.
                return self._fail(
                    seq - 1,
                    f"record {seq - 1} was inserted: the record after it links to the one before it",
                    self.previous,
                )
            if self_consistent and self.previous is not None:
                return self._fail(
                    seq - 1,
                    f"record {seq - 1} was rewritten (content and hash): the next record links to another hash",
                    self.previous,
                )
            if hashed_as(seq + 1):
                return self._fail(
                    seq,
                    f"a record was deleted before {seq} and the later ones renumbered: record "
                    f"{seq} was written as {seq + 1}",
                    r,
                )
            return self._fail(seq, f"record {seq}'s link (prev_hash) does not match the previous record's hash", r)
        if not self_consistent:
            if key_id and chain_hash(r["prev_hash"], seq, r["kind"], r["subject"], r["record"]) == r["hash"]:
                return self._fail(
                    seq,
                    f"record {seq}'s hash is a plain SHA-256, not its keyed hash: rewritten by "
                    "someone without the audit key",
                    r,
                )
            return self._fail(seq, f"record {seq}'s content does not match its hash (altered)", r)
        if key_id and self.keyed_from is None:
            self.keyed_from = seq
        self.legacy += 0 if key_id else 1
        self.prev_prev, self.prev = self.prev, r["hash"]
        self.previous = {"seq": seq, "subject": r["subject"], "kind": r["kind"]}
        self.expected, self.count = seq + 1, self.count + 1
        return True


def rows_in_order(conn, page: int = 10_000):
    """Every audit row in sequence order, read a page at a time (a chain can be millions)."""
    after = None
    while True:
        q = sa.select(audit_log).order_by(audit_log.c.seq).limit(page)
        if after is not None:
            q = q.where(audit_log.c.seq > after)
        rows = conn.execute(q).mappings().all()
        if not rows:
            return
        yield from rows
        after = int(rows[-1]["seq"])


class AuditLog:
    def __init__(self, url: str, key: AuditKey | None = None):
        """`key` unset: BOSUN_AUDIT_KEY, else the embedded default key (read when first needed)."""
        self.engine = engine_for(url)
        self._key = key
        # The chain head exists before anyone appends, so concurrent first appends both
        # find a row to lock instead of racing to create it.
        with self.engine.begin() as conn:
            conn.execute(
                insert_ignoring_duplicates(self.engine, audit_head, ["id"]), [{"id": 1, "seq": 0, "hash": GENESIS}]
            )

    @property
    def key(self) -> AuditKey:
        if self._key is None:
            self._key = current_key()
        return self._key

    def append(self, entries: Iterable[AuditEntry]) -> int:
        """Append entries as one chained block; returns the last sequence number."""
        return self.append_head(entries)[0]

    def append_head(self, entries: Iterable[AuditEntry]) -> tuple[int, str]:
        """`append`, returning the chain head after it (seq, hash): what a batch publishes as
        its anchor. (0, "") when there was nothing to append. `entries` may be a generator:
        it is consumed a chunk at a time, inside one transaction."""
        entries = iter(entries)
        first = next(entries, None)
        if first is None:
            return 0, ""
        with self.engine.begin() as conn:
            return self._append(conn, itertools.chain([first], entries))

    def append_in(self, conn: sa.Connection, entries: list[AuditEntry]) -> int:
        """`append` inside the caller's transaction: the records commit with what they describe."""
        return self._append(conn, entries)[0] if entries else 0

    def _append(self, conn: sa.Connection, entries: Iterable[AuditEntry]) -> tuple[int, str]:
        now, key = clock.now(), self.key
        seq, prev = self._lock_head(conn)
        it = iter(entries)
        for chunk in iter(lambda: list(itertools.islice(it, APPEND_CHUNK)), []):
            rows = []
            for e in chunk:
                seq += 1
                body = canonical(e.record)
                h = chain_hash(prev, seq, e.kind, e.subject, body, key)
                rows.append(
                    {
                        "seq": seq,
                        "recorded_at": now,
                        "kind": e.kind,
                        "batch_id": e.batch_id,
                        "subject": e.subject,
                        "record": body,
                        "prev_hash": prev,
                        "hash": h,
                        "key_id": key.key_id,
                    }
                )
                prev = h
            conn.execute(audit_log.insert(), rows)
        conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=prev))
        return seq, prev

    @staticmethod
    def _lock_head(conn) -> tuple[int, str]:
        # Writing the head row first takes the write lock on SQLite and a row lock on
        # Postgres, so two runs appending at once serialise instead of forking the chain.
        conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=audit_head.c.seq))
        seq, h = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
        return int(seq), h

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
        return int(row.seq), row.hash

    def checkpoints(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.id)).mappings()
            ]

    def verify(self, page: int = 10_000) -> VerifyResult:
        """Walk the chain from the latest retention checkpoint (or the start) to the head."""
        cps = self.checkpoints()
        broken = checkpoint_chain_problem(cps)
        if broken:
            return VerifyResult(False, 0, broken[0], broken[1])
        last_cp = cps[-1] if cps else None
        walker = (
            ChainWalker(int(last_cp["last_seq"]) + 1, last_cp["last_hash"], self.key)
            if last_cp
            else ChainWalker(key=self.key)
        )
        start = walker.expected
        with self.engine.connect() as conn:
            for r in rows_in_order(conn, page):
                if not walker.add(r):
                    walker.failure.from_seq = start
                    return walker.failure
            head_seq, head_hash = conn.execute(
                sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
            ).one()
            head_seq = int(head_seq)
            tip = walker.expected - 1
            if head_seq > tip:
                return VerifyResult(
                    False,
                    walker.count,
                    tip + 1,
                    f"records {tip + 1}..{head_seq} are missing (deleted): the chain head is at "
                    f"{head_seq}, the last record is {tip}",
                    from_seq=start,
                )
            if head_seq < tip:
                extra = conn.execute(
                    sa.select(audit_log.c.subject, audit_log.c.kind).where(audit_log.c.seq == head_seq + 1)
                ).first()
                return VerifyResult(
                    False,
                    walker.count,
                    head_seq + 1,
                    f"record {head_seq + 1} is past the chain head ({head_seq}): inserted",
                    extra and extra.subject,
                    extra and extra.kind,
                    from_seq=start,
                )
            if head_hash != walker.prev:
                p = walker.previous or {}
                return VerifyResult(
                    False,
                    walker.count,
                    tip,
                    f"record {tip} does not match the chain head's hash (rewritten, content and hash)",
                    p.get("subject"),
                    p.get("kind"),
                    from_seq=start,
                )
        return VerifyResult(
            True,
            walker.count,
            from_seq=start,
            key_id=self.key.key_id,
            keyed_from=walker.keyed_from,
            legacy_records=walker.legacy,
        )

    def hashes_at(self, seqs: list[int]) -> dict[int, str]:
        """The stored hash of each of these records that is still in the table."""
        out: dict[int, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(seqs), 1000):
                chunk = seqs[i : i + 1000]
                out.update(
                    {
                        int(s): h
                        for s, h in conn.execute(
                            sa.select(audit_log.c.seq, audit_log.c.hash).where(audit_log.c.seq.in_(chunk))
                        )
                    }
                )
        return out

    def records_for(self, subject: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    audit_log.c.seq, audit_log.c.kind, audit_log.c.record, audit_log.c.batch_id, audit_log.c.recorded_at
                )
                .where(audit_log.c.subject == subject)
                .order_by(audit_log.c.seq)
            ).all()
        return [
            {"seq": int(s), "kind": k, "record": json.loads(r), "batch_id": b, "recorded_at": t}
            for s, k, r, b, t in rows
        ]

    def batch_records(self, batch_id: str, kinds: tuple[str, ...]) -> list[dict]:
        """Records about a whole batch (check results, guardrail activations)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(audit_log.c.seq, audit_log.c.kind, audit_log.c.record, audit_log.c.recorded_at)
                .where(audit_log.c.batch_id == batch_id, audit_log.c.subject == batch_id, audit_log.c.kind.in_(kinds))
                .order_by(audit_log.c.seq)
            ).all()
        return [{"seq": int(s), "kind": k, "record": json.loads(r), "recorded_at": t} for s, k, r, t in rows]

    def search(
        self,
        *,
        kinds: list[str] | None = None,
        subject: str | None = None,
        batch: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        entity: str | None = None,
        decision: str | None = None,
        guardrail: str | None = None,
        model: str | None = None,
        limit: int | None = 100,
        newest_first: bool = False,
        page: int = 5_000,
    ) -> list[dict]:
        """Records matching every filter given, in seq order. Entity, decision, guardrail and
        model are fields of decision records: the SQL narrows by kind, time and a text match
        on the canonical JSON, and the parsed record decides."""

        def where(q):
            if kinds:
                q = q.where(audit_log.c.kind.in_(kinds))
            if subject:
                q = q.where(audit_log.c.subject == subject)
            if batch:
                q = q.where(audit_log.c.batch_id == batch)
            # Every recorded_at is UTC; SQLite compares the stored text, so the bound is made
            # UTC as well (the exact comparison below is on aware datetimes).
            if since:
                q = q.where(audit_log.c.recorded_at >= since.astimezone(timezone.utc))
            if until:
                q = q.where(audit_log.c.recorded_at < until.astimezone(timezone.utc))
            for value, key in ((entity, "entity_key"), (model, None), (decision, None), (guardrail, None)):
                if value:
                    # Canonical JSON has no spaces: a cheap pre-filter, exact match below.
                    q = q.where(audit_log.c.record.contains(json.dumps(value)))
            return q

        out: list[dict] = []
        last = None
        order = audit_log.c.seq.desc() if newest_first else audit_log.c.seq
        with self.engine.connect() as conn:
            while True:
                q = (
                    where(
                        sa.select(
                            audit_log.c.seq,
                            audit_log.c.recorded_at,
                            audit_log.c.kind,
                            audit_log.c.batch_id,
                            audit_log.c.subject,
                            audit_log.c.record,
                        )
                    )
                    .order_by(order)
                    .limit(page)
                )
                if last is not None:
                    q = q.where(audit_log.c.seq < last if newest_first else audit_log.c.seq > last)
                rows = conn.execute(q).all()
                if not rows:
                    return out
                for seq, at, kind, batch_id, subj, body in rows:
                    at = _utc(at)
                    if (since and at < since) or (until and at >= until):
                        continue
                    rec = json.loads(body)
                    if not _matches(rec, entity, decision, guardrail, model):
                        continue
                    out.append(
                        {
                            "seq": int(seq),
                            "recorded_at": at,
                            "kind": kind,
                            "batch_id": batch_id,
                            "subject": subj,
                            "record": rec,
                        }
                    )
                    if limit and len(out) >= limit:
                        return out
                last = int(rows[-1][0])

    def count_by_kind(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                k: int(n)
                for k, n in conn.execute(sa.select(audit_log.c.kind, sa.func.count()).group_by(audit_log.c.kind))
            }


def _utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; every one Bosun writes is UTC.
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def _matches(rec: dict, entity, decision, guardrail, model) -> bool:
    if entity and rec.get("entity_key") != entity:
        return False
    if decision and decision not in (rec.get("decision"), rec.get("route"), rec.get("proposed")):
        return False
    if model and model not in (rec.get("model"), rec.get("model_version")):
        return False
    if guardrail:
        g = rec.get("guardrails") or {}
        if guardrail not in (g.get("blocked_by") or []) + (g.get("flagged_by") or []):
            return False
    return True


def checkpoint_chain_problem(cps: list[dict]) -> tuple[int, str] | None:
    """Each checkpoint's segment starts where the previous one ended: (seq, problem) if not."""
    prev_seq, prev_hash = 0, GENESIS
    for cp in cps:
        if int(cp["first_seq"]) != prev_seq + 1 or cp["prev_hash"] != prev_hash:
            return int(cp["first_seq"]), (
                f"checkpoint {cp['id']} (records {cp['first_seq']}..{cp['last_seq']}) "
                f"does not continue from the previous checkpoint (seq {prev_seq})"
            )
        prev_seq, prev_hash = int(cp["last_seq"]), cp["last_hash"]
    return None
