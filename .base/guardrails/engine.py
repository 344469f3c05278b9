"""The guardrail engine: a workflow's policy file evaluated against proposed decisions.

A policy is data (YAML), not code: each rule names a fact from the decision's context, a
comparison and what happens when it holds. Hard rules cannot be overridden by a model's
output or by run-time config: when they hold, the decisions they forbid are replaced by
the rule's outcome. Soft rules let the decision stand, are recorded and lower confidence.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

POLICY_DIR = Path(__file__).parent / "policies"

_OPS = {
    "equals": operator.eq,
    "not_equals": operator.ne,
    "greater_than": operator.gt,
    "at_least": operator.ge,
    "less_than": operator.lt,
    "at_most": operator.le,
    "in": lambda a, b: a in b,
}


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fact: str
    op: Literal["equals", "not_equals", "greater_than", "at_least", "less_than", "at_most", "in"]
    value: Any

    def holds(self, facts: dict) -> bool:
        if self.fact not in facts:
            raise KeyError(f"policy needs fact {self.fact!r}, which the context did not provide")
        actual = facts[self.fact]
        if actual is None:
            return False
        return bool(_OPS[self.op](actual, self.value))


class HardRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    when: Condition
    forbid: list[str] = Field(min_length=1)
    then: str  # the decision that replaces a forbidden one, or "escalate"


class SoftRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    when: Condition
    penalty: float = Field(gt=0, le=1)  # confidence is multiplied by (1 - penalty)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str
    decisions: list[str]
    confidence_threshold: float = Field(gt=0, le=1)
    hard: list[HardRule] = []
    soft: list[SoftRule] = []

    @model_validator(mode="after")
    def _outcomes_are_known(self):
        allowed = set(self.decisions) | {"escalate"}
        for rule in self.hard:
            unknown = set(rule.forbid + [rule.then]) - allowed
            if unknown:
                raise ValueError(f"hard rule {rule.name!r} names unknown decisions {sorted(unknown)}")
        return self


@dataclass
class Verdict:
    decision: str                      # after hard rules: one of policy.decisions, or "escalate"
    proposed: str
    blocked_by: list[str] = field(default_factory=list)
    flagged_by: list[str] = field(default_factory=list)
    confidence_factor: float = 1.0

    @property
    def overridden(self) -> bool:
        return self.decision != self.proposed

    def as_dict(self) -> dict:
        return {"proposed": self.proposed, "decision": self.decision, "blocked_by": self.blocked_by,
                "flagged_by": self.flagged_by, "confidence_factor": round(self.confidence_factor, 4)}


def load_policy(name_or_path: str | Path) -> Policy:
    path = Path(name_or_path)
    if not path.suffix:
        path = POLICY_DIR / f"{name_or_path}.yaml"
    with open(path) as fh:
        return Policy.model_validate(yaml.safe_load(fh))


def evaluate(policy: Policy, proposed: str, facts: dict) -> Verdict:
    verdict = Verdict(decision=proposed, proposed=proposed)
    for rule in policy.hard:
        # Each rule judges the decision as it stands after the rules before it, so a
        # replacement outcome is itself subject to the rules that follow.
        if verdict.decision in rule.forbid and rule.when.holds(facts):
            verdict.blocked_by.append(rule.name)
            verdict.decision = rule.then
    for rule in policy.soft:
        if rule.when.holds(facts):
            verdict.flagged_by.append(rule.name)
            verdict.confidence_factor *= 1.0 - rule.penalty
    return verdict
