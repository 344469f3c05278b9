"""Bosun's own database (inbox, review queue, audit log) as a Dagster resource."""

from __future__ import annotations

from typing import Optional

import dagster as dg

from orchestration import settings
from resources.env import resolved
from orchestration.audit import AuditLog
from orchestration.dead_letters import DeadLetters
from orchestration.feedback import FeedbackStore
from orchestration.inbox import Inbox
from orchestration.llm_ledger import LLMLedger
from orchestration.metrics import MetricsStore
from orchestration.review import ReviewQueue


class BosunDatabase(dg.ConfigurableResource):
    """`url` unset means BOSUN_DATABASE_URL, else the embedded SQLite file under BOSUN_HOME."""

    url: Optional[str] = None

    @property
    def resolved_url(self) -> str:
        url = resolved(self.url)
        return settings.normalise_url(url) if url else settings.database_url()

    def inbox(self) -> Inbox:
        return Inbox(self.resolved_url)

    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.resolved_url)

    def audit(self) -> AuditLog:
        return AuditLog(self.resolved_url)

    def review_queue(self) -> ReviewQueue:
        return ReviewQueue(self.resolved_url)

    def feedback(self) -> FeedbackStore:
        return FeedbackStore(self.resolved_url)

    def llm_ledger(self) -> LLMLedger:
        return LLMLedger(self.resolved_url)

    def metrics(self) -> MetricsStore:
        return MetricsStore(self.resolved_url)
