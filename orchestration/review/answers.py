"""Reviewers' answers: list, show, approve, reject and correct, shared by `bosun review` and
the HTTP API (both thin over `ReviewService`).

An answer is one transaction: the queue item moves pending -> approved | rejected only if it
is still pending (so two reviewers racing decide it once), and in the same transaction the
feedback row, the audit record, the saga's approval or rejection and, where nothing is left
to execute, the event's terminal state commit with it. Execution comes after the commit:
a process that dies there leaves an approved, planned saga that `bosun saga recover` (or
the batch's next run) finishes exactly once, never a half-recorded answer.

What an answer means for a workflow (its labels, what Bosun proposed, which sagas an
approved escalation runs) comes from the workflow's hooks module (`review_workflows` in
definitions.py): `WORKFLOW`, `EVENT_TYPES`, `LABELS`, `proposed_label(proposal)`,
`decided_label(decision_record)`, `rejected_label(proposed)`, `approved_sagas(item)`,
`saga_executor(resources, holder)`, `record_settled(resources, outcome, note, batch_id, extra)`.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

import sqlalchemy as sa

from orchestration.action.saga_log import SagaLog
from orchestration.audit.chain import AuditEntry, AuditLog
from orchestration.audit.records import DecisionRecord
from orchestration.core import clock
from orchestration.core.db import engine_for
from orchestration.core.db import inbox as inbox_table
from orchestration.decision.feedback import FeedbackStore
from orchestration.review.queue import ReviewQueue
from orchestration.trigger.inbox import Inbox

STATUSES = ("pending", "approved", "rejected")
DECIDABLE = (None, "saga_approval")  # a rolled-back saga that failed is resolved with `bosun saga`


class ReviewError(Exception):
    """A refused answer. `code`: not_found, conflict (already decided), invalid."""

    def __init__(self, code: str, message: str, detail: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail or {}


def _iso(value) -> str | None:
    """SQLite hands back naive datetimes for UTC columns; say they are UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def default_holder(via: str) -> str:
    return f"review:{via}:{socket.gethostname()}:{os.getpid()}"


def subject_of(item: dict) -> str:
    """The event an item is about: a saga's id is its event's key."""
    return item["proposal"].get("saga_id") or item["idempotency_key"]


def kind_of(item: dict) -> str:
    return item["proposal"].get("kind") or "escalation"


class ReviewService:
    def __init__(
        self, db_url: str, resources: Mapping[str, Any], workflows: Mapping[str, Any], holder: str | None = None
    ):
        self.url, self.resources, self.workflows = db_url, resources, workflows
        self.holder = holder or default_holder("local")
        self.engine = engine_for(db_url)
        self.queue, self.audit, self.feedback = ReviewQueue(db_url), AuditLog(db_url), FeedbackStore(db_url)
        self.sagas = SagaLog(db_url)

    # ---- reading ---------------------------------------------------------------------
    def list(self, status: str | None = "pending", workflow: str | None = None, limit: int = 100) -> list[dict]:
        """status: one of STATUSES, or None / "all"."""
        if status == "all":
            status = None
        if status is not None and status not in STATUSES:
            raise ReviewError("invalid", f"status must be one of {', '.join(STATUSES)} or all, not {status!r}")
        items = self.queue.items(status, workflow, limit)
        answers = self._answers([it["id"] for it in items if it["status"] != "pending"])
        return [self._summary(it, answers.get(it["id"])) for it in items]

    def show(self, item_id: int) -> dict:
        """The item with the full decision record of its event and everything the audit
        log holds about the event (decision, actions, outcome, answers)."""
        item = self._item(item_id)
        subject = subject_of(item)
        chain = self.audit.records_for(subject)
        # The typed record (orchestration/audit/records.py), whatever shape it was stored in.
        decisions = [DecisionRecord.read(r["record"]).body() for r in chain if r["kind"] == "decision"]
        return {
            **self._summary(item, self._answers([item_id]).get(item_id)),
            "proposal": item["proposal"],
            "decision_record": decisions[-1] if decisions else None,
            "executes": self.executes(item),
            "audit": chain,
            "feedback": [self._plain(f) for f in self._feedback_for(subject)],
        }

    def executes(self, item: dict) -> list[dict]:
        """What approving the item executes (or, once decided, executed): per saga its
        parameters, its steps in order (each with the steps it waits for and its idempotency
        key) and its state in the saga log. Empty when an approval only closes the event."""
        kind, proposal = kind_of(item), item["proposal"]
        plans: list[dict] = []
        if kind == "saga_approval":
            plans = [
                {
                    "saga_id": proposal["saga_id"],
                    "params": proposal.get("params") or {},
                    "steps": (proposal.get("plan") or {}).get("steps", []),
                }
            ]
        elif kind == "escalation":
            hooks = self.workflows.get(item["workflow"])
            staged = hooks.approved_sagas(item) if hooks is not None else []
            if staged:  # described as `approve` would plan them; building the executor touches nothing
                plan = hooks.saga_executor(self.resources, self.holder).plan
                plans = [{"saga_id": p["key"], "params": p, "steps": plan.describe(p)["steps"]} for p in staged]
        logged = self.sagas.load([p["saga_id"] for p in plans]) if plans else {}
        for p in plans:
            row = logged.get(p["saga_id"])
            p["status"] = row["status"] if row else "not planned yet"
            p["approved_by"] = row["approved_by"] if row else None
            for step in p["steps"]:
                step["state"] = row["steps"].get(step["step"], ("planned", None))[0] if row else "not planned yet"
                if step.get("skipped") and step["state"] in ("planned", "not planned yet"):
                    # A conditional step its params do not meet: the executor will log it skipped.
                    step["state"] = f"will be skipped ({step.get('when')} not met)"
        return plans

    # ---- answering -------------------------------------------------------------------
    def approve(self, item_id: int, by: str, note: str | None = None, via: str = "cli") -> dict:
        item, hooks = self._pending(item_id, by)
        kind, subject, proposal = kind_of(item), subject_of(item), item["proposal"]
        proposed = hooks.proposed_label(proposal)
        if proposed is None:
            raise ReviewError(
                "invalid",
                f"review {item_id}: Bosun proposed no decision to approve "
                f"({proposal.get('decision')!r}); reject it with a label instead",
            )
        staged = hooks.approved_sagas(item) if kind == "escalation" else []
        saga_ids = [proposal["saga_id"]] if kind == "saga_approval" else [p["key"] for p in staged]
        # A lease holder per answer: two answers served by one process must not share leases.
        executor = hooks.saga_executor(self.resources, f"{self.holder}:{uuid.uuid4().hex[:8]}") if saga_ids else None
        now = clock.now()
        record = {
            "review_id": item_id,
            "answer": "approved",
            "by": by,
            "via": via,
            "workflow": item["workflow"],
            "kind": kind,
            "label": proposed,
            "decided": proposed,
            "note": note,
            "reason": item["reason"],
            "acts": saga_ids,
        }
        with self.engine.begin() as conn:
            self._claim(conn, item, "approved")
            if staged:  # planned as awaiting approval, then approved like any gated plan
                self.sagas.plan(
                    item["workflow"],
                    item["batch_id"],
                    staged,
                    executor.plan.order,
                    {p["key"]: ("awaiting_approval", item["reason"]) for p in staged},
                    conn=conn,
                )
            for saga_id in saga_ids:
                if not self.sagas.approve(saga_id, by, conn=conn):
                    state = self.sagas.load([saga_id]).get(saga_id, {}).get("status", "missing")
                    raise ReviewError(
                        "conflict",
                        f"review {item_id}: saga {saga_id} is {state}, not awaiting approval; nothing was approved",
                    )
            self.feedback.record(
                item["workflow"],
                subject,
                "approve",
                proposed,
                by,
                decided=proposed,
                note=note,
                review_id=item_id,
                conn=conn,
            )
            if not saga_ids:  # nothing to execute: the escalation ends here
                Inbox.set_states_in(
                    conn,
                    [
                        {
                            "key": subject,
                            "status": "done",
                            "reason": f"{proposed} approved by {by}" + (f": {note}" if note else ""),
                            "outcome": {"decision": proposed, "reviewed_by": by, "review_id": item_id},
                        }
                    ],
                    item["batch_id"],
                    now,
                )
            audit_kind = "approval" if kind == "saga_approval" else "review"
            if kind == "saga_approval":
                record["approved_by"] = by
            self.audit.append_in(conn, [AuditEntry(audit_kind, subject, record, item["batch_id"])])
        result = {"review_id": item_id, "answer": "approved", "by": by, "label": proposed, "event": subject}
        if saga_ids:
            result["sagas"] = self._execute(hooks, executor, saga_ids, item, f"approved by {by}")
        return result

    def reject(self, item_id: int, by: str, reason: str, label: str | None = None, via: str = "cli") -> dict:
        if not (reason or "").strip():
            raise ReviewError("invalid", "a rejection needs a reason")
        item, hooks = self._pending(item_id, by)
        kind, subject, proposal = kind_of(item), subject_of(item), item["proposal"]
        proposed = hooks.proposed_label(proposal)
        label = label or hooks.rejected_label(proposed)
        if label is None:
            raise ReviewError(
                "invalid",
                f"review {item_id}: say what the right decision is instead of "
                f"{proposed!r} (label: one of {', '.join(hooks.LABELS)})",
            )
        self._check_label(hooks, label)
        now = clock.now()
        with self.engine.begin() as conn:
            self._claim(conn, item, "rejected")
            if kind == "saga_approval" and not self.sagas.reject(proposal["saga_id"], by, reason, conn=conn):
                state = self.sagas.load([proposal["saga_id"]]).get(proposal["saga_id"], {}).get("status", "missing")
                raise ReviewError(
                    "conflict",
                    f"review {item_id}: saga {proposal['saga_id']} is {state}, "
                    f"not awaiting approval; nothing was rejected",
                )
            self.feedback.record(
                item["workflow"],
                subject,
                "reject",
                label,
                by,
                decided=proposed,
                note=reason,
                review_id=item_id,
                conn=conn,
            )
            Inbox.set_states_in(
                conn,
                [
                    {
                        "key": subject,
                        "status": "done",
                        "reason": f"{proposed} rejected by {by}: {reason}",
                        "outcome": {"decision": label, "reviewed_by": by, "review_id": item_id, "acted": False},
                    }
                ],
                item["batch_id"],
                now,
            )
            self.audit.append_in(
                conn,
                [
                    AuditEntry(
                        "review",
                        subject,
                        {
                            "review_id": item_id,
                            "answer": "rejected",
                            "by": by,
                            "via": via,
                            "workflow": item["workflow"],
                            "kind": kind,
                            "label": label,
                            "decided": proposed,
                            "reason": reason,
                        },
                        item["batch_id"],
                    )
                ],
            )
        return {"review_id": item_id, "answer": "rejected", "by": by, "label": label, "event": subject}

    def correct(
        self,
        target: str | int,
        label: str,
        by: str,
        note: str | None = None,
        via: str = "cli",
        workflow: str | None = None,
    ) -> dict:
        """The right label for a decision: a review item's id, or any event (its idempotency
        key `source:id`, or its id), decided long ago or still waiting. Records feedback and
        an audit record; acts on nothing and changes no state."""
        if not by:
            raise ReviewError("invalid", "a correction needs a reviewer")
        review_id, item = None, None
        if isinstance(target, int) or str(target).isdigit():
            item = self._item(int(target))
            review_id, subject, workflow = item["id"], subject_of(item), item["workflow"]
        else:
            subject, etype = self._event(str(target))
            workflow = workflow or self._workflow_for_type(etype)
        hooks = self._hooks(workflow)
        self._check_label(hooks, label)
        decisions = [r["record"] for r in self.audit.records_for(subject) if r["kind"] == "decision"]
        decided = hooks.decided_label(decisions[-1]) if decisions else None
        if decided is None and item is not None:
            decided = hooks.proposed_label(item["proposal"])
        with self.engine.begin() as conn:
            fid = self.feedback.record(
                workflow, subject, "correct", label, by, decided=decided, note=note, review_id=review_id, conn=conn
            )
            self.audit.append_in(
                conn,
                [
                    AuditEntry(
                        "review",
                        subject,
                        {
                            "review_id": review_id,
                            "answer": "corrected",
                            "by": by,
                            "via": via,
                            "workflow": workflow,
                            "label": label,
                            "decided": decided,
                            "note": note,
                            "feedback_id": fid,
                        },
                        item["batch_id"] if item else None,
                    )
                ],
            )
        return {
            "event": subject,
            "answer": "corrected",
            "by": by,
            "label": label,
            "decided": decided,
            "review_id": review_id,
            "feedback_id": fid,
        }

    # ---- internals -------------------------------------------------------------------
    def _hooks(self, workflow: str):
        if workflow not in self.workflows:
            raise ReviewError("invalid", f"no review hooks for workflow {workflow!r}")
        return self.workflows[workflow]

    @staticmethod
    def _check_label(hooks, label: str) -> None:
        if label not in hooks.LABELS:
            raise ReviewError("invalid", f"label must be one of {', '.join(hooks.LABELS)}, not {label!r}")

    def _item(self, item_id: int) -> dict:
        item = self.queue.get(item_id)
        if item is None:
            raise ReviewError("not_found", f"no review item {item_id}")
        return item

    def _pending(self, item_id: int, by: str) -> tuple[dict, Any]:
        if not (by or "").strip():
            raise ReviewError("invalid", "an answer needs a reviewer")
        item = self._item(item_id)
        if kind_of(item) not in ("escalation", "saga_approval"):
            raise ReviewError(
                "invalid",
                f"review {item_id} is a {kind_of(item)}: resolve it with `bosun saga rollback` or `bosun saga recover`",
            )
        if item["status"] != "pending":
            self._refuse_decided(item)
        return item, self._hooks(item["workflow"])

    def _claim(self, conn: sa.Connection, item: dict, status: str) -> None:
        if not self.queue.decide(item["id"], status, conn=conn):
            self._refuse_decided(self.queue.get(item["id"]) or item)

    def _refuse_decided(self, item: dict):
        answer = self._answers([item["id"]]).get(item["id"]) or {}
        who = f" by {answer['reviewer']} at {_iso(answer['created_at'])}" if answer else ""
        raise ReviewError(
            "conflict",
            f"review {item['id']} was already {item['status']}{who}; nothing was done",
            {"status": item["status"], "answer": self._plain(answer) if answer else None},
        )

    def _answers(self, item_ids: list[int]) -> dict[int, dict]:
        """The approve/reject feedback row of each decided item."""
        from orchestration.core.db import feedback

        if not item_ids:
            return {}
        q = (
            sa.select(feedback)
            .where(feedback.c.review_id.in_(item_ids), feedback.c.kind.in_(("approve", "reject")))
            .order_by(feedback.c.id)
        )
        with self.engine.connect() as conn:
            return {r["review_id"]: dict(r) for r in conn.execute(q).mappings()}

    def _feedback_for(self, subject: str) -> list[dict]:
        from orchestration.core.db import feedback

        with self.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    sa.select(feedback).where(feedback.c.subject == subject).order_by(feedback.c.id)
                ).mappings()
            ]

    def _event(self, target: str) -> tuple[str, str | None]:
        """(idempotency key, type) of the event named by key or id."""
        cols = (inbox_table.c.idempotency_key, inbox_table.c.type)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*cols).where(
                    sa.or_(inbox_table.c.idempotency_key == target, inbox_table.c.event_id == target)
                )
            ).all()
        exact = [r for r in rows if r[0] == target]
        if exact:
            return exact[0][0], exact[0][1]
        if len(rows) > 1:
            raise ReviewError(
                "invalid",
                f"{target!r} names {len(rows)} events; use the key (source:id): " + ", ".join(r[0] for r in rows[:5]),
            )
        if not rows:
            raise ReviewError("not_found", f"no event {target!r} in the inbox")
        return rows[0][0], rows[0][1]

    def _workflow_for_type(self, etype: str | None) -> str:
        for name, hooks in self.workflows.items():
            if etype in hooks.EVENT_TYPES:
                return name
        raise ReviewError("invalid", f"no workflow handles events of type {etype!r}")

    def _execute(self, hooks, executor, saga_ids: list[str], item: dict, note: str) -> dict:
        """Run the approved sagas (the log resumes any that a dead process left) and record
        what they did: the events' terminal states, and each step in the audit log."""
        out = executor.execute(saga_ids)
        # The hook records the terminal states and each step in the audit log, as a batch run would.
        hooks.record_settled(self.resources, out, note, item["batch_id"], {"review_id": item["id"]})
        return {
            "done": list(out.done),
            "failed": {k: f.get("compensation_error") or f["error"] for k, f in out.failed.items()},
            "refused": {k: r["reason"] for k, r in out.refused.items()},
            "deferred": list(out.deferred),
            "in_doubt": list(out.unfinished),
        }

    @staticmethod
    def _plain(row: dict) -> dict:
        return {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in row.items()}

    def _summary(self, item: dict, answer: dict | None) -> dict:
        hooks = self.workflows.get(item["workflow"])
        proposed = hooks.proposed_label(item["proposal"]) if hooks else None
        out = {
            "id": item["id"],
            "workflow": item["workflow"],
            "kind": kind_of(item),
            "event": subject_of(item),
            "entity_key": item["entity_key"],
            "batch_id": item["batch_id"],
            "proposed": proposed,
            "confidence": item["confidence"],
            "reason": item["reason"],
            "status": item["status"],
            "created_at": _iso(item["created_at"]),
            "answer": None,
        }
        if answer:
            out["answer"] = {
                "by": answer["reviewer"],
                "label": answer["label"],
                "note": answer["note"],
                "at": _iso(answer["created_at"]),
            }
        return out
