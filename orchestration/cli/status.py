"""`bosun status`: what Bosun's tables hold, each figure named for what it counts.

SQLAlchemy Core over the engine's tables only, so the command answers without loading the
code location (no Dagster, no scikit-learn at import).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sqlalchemy as sa

from orchestration.core.db import dead_letters, engine_for, inbox, review_queue


@dataclass(frozen=True)
class InboxStatus:
    # Every event stored in the inbox, whatever its state (a retried dead letter is one row per attempt).
    events_total: int
    # Stored and not yet in a terminal state: what the next batches will take (status `received`).
    events_waiting: int
    # Events per state, terminal or not: done, escalated, rejected, dead_lettered, received, ...
    events_by_status: dict[str, int]
    # Deliveries of an event already stored (same source and id), counted and otherwise ignored.
    duplicate_deliveries: int
    review_items_pending: int
    dead_letters_open: int

    def as_dict(self) -> dict:
        return asdict(self)


def inbox_status(url: str) -> InboxStatus:
    engine = engine_for(url)
    with engine.connect() as conn:
        by_status = {
            s: int(n) for s, n in conn.execute(sa.select(inbox.c.status, sa.func.count()).group_by(inbox.c.status))
        }
        dupes = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(inbox.c.duplicate_count), 0))).scalar_one()
        pending = conn.execute(
            sa.select(sa.func.count()).select_from(review_queue).where(review_queue.c.status == "pending")
        ).scalar_one()
        open_letters = conn.execute(
            sa.select(sa.func.count()).select_from(dead_letters).where(dead_letters.c.status == "open")
        ).scalar_one()
    return InboxStatus(
        events_total=sum(by_status.values()),
        events_waiting=by_status.get("received", 0),
        events_by_status=dict(sorted(by_status.items())),
        duplicate_deliveries=int(dupes),
        review_items_pending=int(pending),
        dead_letters_open=int(open_letters),
    )
