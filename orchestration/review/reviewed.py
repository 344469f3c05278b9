"""Decisions as the audit log archived them, joined with what reviewers said was right.

A retrain must learn from the facts a decision was made from at the time, not from facts
looked up again later (an entity acted on since would look "already done"), so examples come from
the audit's decision records, never from re-assembled context.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable

import sqlalchemy as sa

from orchestration.core.db import audit_log, engine_for, feedback

_CHUNK = 500  # subjects per IN (...) query: well under every driver's parameter limit


def decision_records(
    url: str,
    subjects: Iterable[str] | None = None,
    since: datetime | None = None,
    event_types: Iterable[str] | None = None,
) -> dict[str, dict]:
    """The latest decision record per subject (a re-run batch decides again; the last one
    counts), with `recorded_at`, `seq` and `batch_id` added. `event_types` keeps one
    workflow's decisions (the audit log is shared)."""
    engine = engine_for(url)
    base = (
        sa.select(
            audit_log.c.seq, audit_log.c.subject, audit_log.c.recorded_at, audit_log.c.batch_id, audit_log.c.record
        )
        .where(audit_log.c.kind == "decision")
        .order_by(audit_log.c.seq)
    )
    if since is not None:
        base = base.where(audit_log.c.recorded_at >= since)
    queries = (
        [base]
        if subjects is None
        else [base.where(audit_log.c.subject.in_(chunk)) for chunk in _chunks(sorted(set(subjects)))]
    )
    types = set(event_types) if event_types is not None else None
    out: dict[str, dict] = {}
    with engine.connect() as conn:
        for q in queries:
            for seq, subject, recorded_at, batch_id, body in conn.execute(q):
                record = json.loads(body)
                if types is not None and (record.get("event") or {}).get("type") not in types:
                    continue
                out[subject] = {**record, "seq": int(seq), "recorded_at": recorded_at, "batch_id": batch_id}
    return out


def latest_feedback(url: str, workflow: str, after_id: int = 0) -> dict[str, dict]:
    """Each subject's latest feedback row (later answers win), optionally only rows after
    `after_id`."""
    q = sa.select(feedback).where(feedback.c.workflow == workflow, feedback.c.id > after_id).order_by(feedback.c.id)
    with engine_for(url).connect() as conn:
        return {r["subject"]: dict(r) for r in conn.execute(q).mappings()}


def feedback_after(url: str, workflow: str, after_id: int) -> tuple[int, int]:
    """(rows after `after_id`, the highest id): what a trigger needs to decide whether
    enough new feedback has come in, in one query."""
    q = sa.select(sa.func.count(), sa.func.max(feedback.c.id)).where(
        feedback.c.workflow == workflow, feedback.c.id > after_id
    )
    with engine_for(url).connect() as conn:
        n, top = conn.execute(q).one()
    return int(n), int(top or after_id)


def reviewed_decisions(
    url: str, workflow: str, event_types: Iterable[str] | None = None
) -> tuple[list[dict], list[str]]:
    """([{subject, label, kind, reviewer, feedback_id, reviewed_at, decision: record}], subjects
    reviewed whose decision the audit log does not hold)."""
    labels = latest_feedback(url, workflow)
    records = decision_records(url, labels, event_types=event_types)
    joined, missing = [], []
    for subject, f in labels.items():
        record = records.get(subject)
        if record is None:
            missing.append(subject)
            continue
        joined.append(
            {
                "subject": subject,
                "label": f["label"],
                "kind": f["kind"],
                "reviewer": f["reviewer"],
                "feedback_id": int(f["id"]),
                "reviewed_at": f["created_at"],
                "decision": record,
            }
        )
    return joined, missing


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
