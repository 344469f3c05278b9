"""Bosun's own database (inbox, review queue, audit log) as a Dagster resource."""

from __future__ import annotations

from typing import Optional

import dagster as dg

from orchestration.audit.chain import AuditLog
from orchestration.audit.key import key_from_secret
from orchestration.core import settings
from orchestration.decision.feedback import FeedbackStore
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.review.queue import ReviewQueue
from orchestration.trigger.dead_letters import DeadLetters
from orchestration.trigger.inbox import Inbox
from orchestration.verification.metrics import MetricsStore
from resources.env import resolved


class BosunDatabase(dg.ConfigurableResource):
    """`url` unset means BOSUN_DATABASE_URL, else the embedded SQLite file under BOSUN_HOME.
    `audit_key` (an EnvVar: BOSUN_AUDIT_KEY) keys the audit chain; unset, the embedded
    default key file in BOSUN_HOME does (orchestration/audit/key.py)."""

    url: Optional[str] = None
    audit_key: Optional[str] = None

    def __repr_args__(self):
        # Inside a run the EnvVar is resolved: the key itself must never be shown.
        for name, value in super().__repr_args__():
            yield (name, "**********") if name == "audit_key" and value else (name, value)

    @property
    def resolved_url(self) -> str:
        url = resolved(self.url)
        return settings.normalise_url(url) if url else settings.database_url()

    def inbox(self) -> Inbox:
        return Inbox(self.resolved_url)

    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.resolved_url)

    def audit(self) -> AuditLog:
        secret = resolved(self.audit_key)
        return AuditLog(self.resolved_url, key_from_secret(secret) if secret else None)

    def review_queue(self) -> ReviewQueue:
        return ReviewQueue(self.resolved_url)

    def feedback(self) -> FeedbackStore:
        return FeedbackStore(self.resolved_url)

    def llm_ledger(self) -> LLMLedger:
        return LLMLedger(self.resolved_url)

    def metrics(self) -> MetricsStore:
        return MetricsStore(self.resolved_url)
