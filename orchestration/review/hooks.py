"""What a reviewer's answer means for a workflow, derived from its declaration: the labels a
decision can have, what Bosun proposed and decided, and the sagas an approved escalation
runs (the workflow's own saga, executed once under the event's key).

`ReviewService` (answers.py) reads these through the workflow's `reviews`; nothing here
names a workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence


@dataclass(frozen=True)
class ReviewHooks:
    WORKFLOW: str
    EVENT_TYPES: Sequence[str]
    # The decisions the local model learns; "escalate" and "no_result" are routes, not answers.
    LABELS: Sequence[str]
    acting_label: str  # the decision that acts (and that a plan awaiting approval proposes)
    # (event key, proposal) -> the sagas approving an escalation runs, as a batch run plans them.
    sagas_of: Callable[[str, Mapping[str, Any]], list[dict]]
    saga_executor: Callable[..., Any]  # (resources, holder)
    record_settled: Callable[..., int]  # (resources, outcome, note, batch_id, extra)
    # Refusing a proposal to act means this label; refusing anything else must name one.
    refused_label: Optional[str] = None

    @classmethod
    def from_actions(cls, event_types, labels, actions, executor, refused_label: Optional[str] = None) -> "ReviewHooks":
        """The hooks of a workflow whose review proposals (`ActionSpec.review_proposal`) hold
        what its saga's parameters are made from: approving runs that saga under the event's key."""
        from orchestration.action.batch import record_settled

        def settle(resources, outcome, note, batch_id=None, extra=None) -> int:
            return record_settled(resources, outcome, note, actions, batch_id, extra)

        return cls(
            actions.workflow,
            tuple(event_types),
            tuple(labels),
            actions.acting_label,
            lambda key, proposal: [actions.saga_params({**proposal, "key": key})],
            executor,
            settle,
            refused_label,
        )

    def _first_label(self, record: Mapping[str, Any]) -> Optional[str]:
        # The final decision when it is one (a guardrail may have made it "escalate"), else
        # the model's own proposal.
        for name in ("decision", "proposed"):
            if record.get(name) in self.LABELS:
                return record[name]
        return None

    def proposed_label(self, proposal: Mapping[str, Any]) -> Optional[str]:
        """What Bosun proposed in a review item: a plan awaiting approval proposes to act."""
        if proposal.get("kind") == "saga_approval":
            return self.acting_label
        return self._first_label(proposal)

    def decided_label(self, decision: Mapping[str, Any]) -> Optional[str]:
        """What Bosun decided, from the event's decision record in the audit log."""
        return self._first_label(decision)

    def rejected_label(self, proposed: Optional[str]) -> Optional[str]:
        return self.refused_label if proposed == self.acting_label else None

    def approved_sagas(self, item: Mapping[str, Any]) -> list[dict]:
        """The sagas approving an escalated decision to act runs (none for anything else)."""
        proposal = item["proposal"]
        if proposal.get("kind") or self.proposed_label(proposal) != self.acting_label:
            return []
        return self.sagas_of(item["idempotency_key"], proposal)
