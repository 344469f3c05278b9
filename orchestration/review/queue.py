"""The review queue: decisions a human must take, kept until answered."""

from __future__ import annotations

import sqlalchemy as sa

from orchestration.core import clock, settings
from orchestration.core.db import engine_for, insert_ignoring_duplicates, review_queue


def review_console_metadata(workflow: str) -> dict:
    """Materialization metadata linking a batch to the reviewer console's queue of its
    workflow, where its escalations are answered; empty when no console is known
    (BOSUN_CONSOLE_URL unset). A malformed URL is named in the metadata instead: a link
    must not fail a batch whose payments are already made."""
    from urllib.parse import urlencode

    import dagster as dg  # here, not at import: the CLI reads the queue without loading Dagster

    try:
        base = settings.console_url()
    except ValueError as err:
        return {"review_console_error": dg.MetadataValue.text(str(err))}
    if base is None:
        return {}
    return {"review_console": dg.MetadataValue.url(f"{base}/?{urlencode({'workflow': workflow})}")}


class ReviewQueue:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    def submit(self, workflow: str, items: list[dict], batch_id: str | None = None) -> int:
        """items: key, entity_key, proposal, confidence, reason. A replayed batch adds nothing twice."""
        if not items:
            return 0
        now = clock.now()
        rows = [
            {
                "idempotency_key": it["key"],
                "workflow": workflow,
                "batch_id": batch_id,
                "entity_key": it.get("entity_key"),
                "proposal": it["proposal"],
                "confidence": it.get("confidence"),
                "reason": it["reason"],
                "status": "pending",
                "created_at": now,
            }
            for it in items
        ]
        with self.engine.begin() as conn:
            res = conn.execute(insert_ignoring_duplicates(self.engine, review_queue, ["idempotency_key"]), rows)
        return res.rowcount or 0

    def pending(self, limit: int = 100) -> list[dict]:
        q = sa.select(review_queue).where(review_queue.c.status == "pending").order_by(review_queue.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def items(self, status: str | None = "pending", workflow: str | None = None, limit: int = 100) -> list[dict]:
        """Items in one status (None: all), oldest first."""
        q = sa.select(review_queue).order_by(review_queue.c.id).limit(limit)
        if status:
            q = q.where(review_queue.c.status == status)
        if workflow:
            q = q.where(review_queue.c.workflow == workflow)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def count(self, status: str = "pending") -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(review_queue).where(review_queue.c.status == status)
                ).scalar_one()
            )

    def get(self, item_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(review_queue).where(review_queue.c.id == item_id)).mappings().first()
        return dict(row) if row else None

    def decide(self, item_id: int, status: str, conn: sa.Connection | None = None) -> bool:
        """pending -> status, once; False if someone already decided it. With `conn`, inside
        the caller's transaction: the claim commits with the answer's effects or not at all."""
        stmt = (
            review_queue.update()
            .where(review_queue.c.id == item_id, review_queue.c.status == "pending")
            .values(status=status)
        )
        if conn is not None:
            return (conn.execute(stmt).rowcount or 0) == 1
        with self.engine.begin() as conn:
            return (conn.execute(stmt).rowcount or 0) == 1
