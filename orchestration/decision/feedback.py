"""Reviewers' answers as data: one row per approve, reject or correction of a decision.

Later answers win: `labels()` gives each event's latest label, which is what the calibrator
refit and the local model's retraining learn from.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import engine_for, feedback

KINDS = ("approve", "reject", "correct")


class FeedbackStore:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    def record(
        self,
        workflow: str,
        subject: str,
        kind: str,
        label: str,
        reviewer: str,
        *,
        decided: str | None = None,
        note: str | None = None,
        review_id: int | None = None,
        conn: sa.Connection | None = None,
    ) -> int:
        """One answer; with `conn`, inside the caller's transaction (the answer and what it
        decides commit together)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if not reviewer:
            raise ValueError("feedback needs a reviewer")
        row = {
            "workflow": workflow,
            "subject": subject,
            "kind": kind,
            "label": label,
            "decided": decided,
            "note": note,
            "reviewer": reviewer,
            "review_id": review_id,
            "created_at": clock.now(),
        }
        if conn is not None:
            return int(conn.execute(feedback.insert().returning(feedback.c.id), [row]).scalar_one())
        with self.engine.begin() as conn:
            return int(conn.execute(feedback.insert().returning(feedback.c.id), [row]).scalar_one())

    def record_many(self, rows: list[dict]) -> int:
        """Bulk form of `record` (keys as its arguments); for imports and tests at scale."""
        now = clock.now()
        full = [{"decided": None, "note": None, "review_id": None, "created_at": now, **r} for r in rows]
        bad = [r for r in full if r["kind"] not in KINDS or not r.get("reviewer")]
        if bad:
            raise ValueError(f"{len(bad)} feedback rows without a valid kind or reviewer, e.g. {bad[0]}")
        if full:
            with self.engine.begin() as conn:
                conn.execute(feedback.insert(), full)
        return len(full)

    def list(self, workflow: str | None = None, since: datetime | None = None, limit: int | None = None) -> list[dict]:
        q = sa.select(feedback).order_by(feedback.c.id)
        if workflow:
            q = q.where(feedback.c.workflow == workflow)
        if since:
            q = q.where(feedback.c.created_at >= since)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def labels(self, workflow: str) -> dict[str, str]:
        """Each event's latest reviewed label."""
        return {r["subject"]: r["label"] for r in self.list(workflow)}
