"""The audit log's decision record, typed: one schema written by every workflow's batch
(action/batch.py), by the approval and recovery paths, and read by `bosun audit show`,
`bosun explain`, replay and the review API.

The generic fields are declared; a workflow's own fields (its facts, its payload) ride along
as extras. A record is read tolerantly: it may have been written years ago, by another
workflow or another version of Bosun, so a field of an unexpected shape is kept aside under
`unreadable` (shown, never a crash) instead of failing the whole record.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# A decision is a label, or one label per guarded output ({"team": "billing", "priority": "high"}).
Label = Union[str, dict[str, Any], None]
Score = Union[float, dict[str, float], None]


class ContextUsed(BaseModel):
    """What the decision was made from: each source's state, conflicts, knowledge passages
    (references, never text), quality factors, the assembled document's items."""

    model_config = ConfigDict(extra="allow")
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    conflicts: list[Any] = Field(default_factory=list)
    quality_factors: list[dict[str, Any]] = Field(default_factory=list)
    policy_passages: list[dict[str, Any]] = Field(default_factory=list)
    knowledge: dict[str, Any] = Field(default_factory=dict)
    assembly: dict[str, Any] = Field(default_factory=dict)
    pii_redacted: Any = None


class DecisionRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    entity_key: Optional[str] = None
    event: dict[str, Any] = Field(default_factory=dict)  # source, id, type, version, payload hash
    context_hash: Optional[str] = None
    context_used: ContextUsed = Field(default_factory=ContextUsed)
    model: Optional[str] = None
    model_version: Optional[str] = None
    prompt_version: Optional[str] = None
    decision_type: Optional[str] = None
    route_reason: Optional[str] = None
    latency_s: Optional[float] = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: Optional[bool] = None
    probabilities: dict[str, Any] = Field(default_factory=dict)
    proposed: Label = None
    confidence: Score = None
    confidence_breakdown: list[dict[str, Any]] = Field(default_factory=list)
    calibrator_version: Optional[str] = None
    guardrails: dict[str, Any] = Field(default_factory=dict)
    re_retrieved: bool = False
    decision: Label = None
    route: Optional[str] = None
    reason: Optional[str] = None
    # Fields whose stored shape did not fit the schema, as they were stored.
    unreadable: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def read(cls, raw: Any) -> "DecisionRecord":
        """The record as stored; a field of another shape goes to `unreadable`."""
        if not isinstance(raw, dict):
            return cls(unreadable={"record": raw})
        data, aside = dict(raw), {}
        for _ in range(len(data) + 1):
            try:
                return cls.model_validate({**data, "unreadable": {**aside, **(data.get("unreadable") or {})}})
            except ValidationError as err:
                bad = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
                if not bad & set(data):
                    break
                aside.update({k: data.pop(k) for k in bad & set(data)})
        return cls(unreadable={**aside, **data})

    def body(self) -> dict[str, Any]:
        """What the audit log stores: JSON, extras included, nothing empty left out."""
        out = self.model_dump(mode="json")
        if not out["unreadable"]:
            del out["unreadable"]
        return out
