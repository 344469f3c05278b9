"""The guardrail engine: a workflow's policy file evaluated against proposed decisions.

A policy is data (YAML), not code: each rule names a fact from the decision's context, a
comparison and what happens when it holds. Hard rules cannot be overridden by a model's
output or by run-time config: when they hold, the decisions they forbid are replaced by
the rule's outcome. Soft rules let the decision stand, are recorded and lower confidence.

Dynamic limits: a condition may compare a fact with a named `limit` instead of a fixed
value. The limit's value comes from the context (`by_fact`: e.g. the vendor's risk tier
picks the auto-approve ceiling) and from config (`overrides`, e.g. an environment
variable read by the workflow); config can only tighten a limit, never loosen it, so a
hard rule stays hard whatever run-time config says.

Output guards judge what the model said, not the context: the decision must be one the
policy allows, and values the model states (an amount) must match the facts.
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


class Limit(BaseModel):
    """A threshold whose value depends on the context: values[facts[by_fact]], else default."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    by_fact: str | None = None
    values: dict[str, float] = {}
    default: float
    # Which way is stricter, so config overrides can only tighten: "lower" for ceilings.
    stricter: Literal["lower", "higher"] = "lower"

    def value_for(self, facts: dict, override: float | None = None) -> float:
        if self.by_fact is not None and self.by_fact not in facts:
            raise KeyError(f"limit needs fact {self.by_fact!r}, which the context did not provide")
        v = self.values.get(str(facts[self.by_fact]), self.default) if self.by_fact else self.default
        if override is None:
            return v
        return min(v, override) if self.stricter == "lower" else max(v, override)


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fact: str
    op: Literal["equals", "not_equals", "greater_than", "at_least", "less_than", "at_most", "in"]
    value: Any = None
    limit: str | None = None  # compare with a named dynamic limit instead of `value`

    @model_validator(mode="after")
    def _one_threshold(self):
        if (self.limit is None) == (self.value is None):
            raise ValueError(f"condition on {self.fact!r} needs exactly one of value and limit")
        return self

    def holds(self, facts: dict, limits: dict[str, float] | None = None) -> bool:
        if self.fact not in facts:
            raise KeyError(f"policy needs fact {self.fact!r}, which the context did not provide")
        actual = facts[self.fact]
        if actual is None:
            return False
        threshold = self.value if self.limit is None else (limits or {})[self.limit]
        return bool(_OPS[self.op](actual, threshold))


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


class OutputRule(BaseModel):
    """A value the model states must match a fact, within `tolerance`, else `then`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    stated: str  # the field of the model's answer
    must_match: str  # the fact it must equal
    tolerance: float = Field(default=0.0, ge=0)
    then: str = "escalate"


ALLOWED_DECISION_RULE = "decision_is_in_the_allowed_set"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str
    decisions: list[str]
    confidence_threshold: float = Field(gt=0, le=1)
    limits: dict[str, Limit] = {}
    hard: list[HardRule] = []
    soft: list[SoftRule] = []
    output: list[OutputRule] = []

    @model_validator(mode="after")
    def _outcomes_and_limits_are_known(self):
        allowed = set(self.decisions) | {"escalate"}
        for rule in self.hard:
            unknown = set(rule.forbid + [rule.then]) - allowed
            if unknown:
                raise ValueError(f"hard rule {rule.name!r} names unknown decisions {sorted(unknown)}")
        for rule in [*self.hard, *self.soft]:
            if rule.when.limit is not None and rule.when.limit not in self.limits:
                raise ValueError(f"rule {rule.name!r} names unknown limit {rule.when.limit!r}")
        for rule in self.output:
            if rule.then not in allowed:
                raise ValueError(f"output rule {rule.name!r} names unknown decision {rule.then!r}")
        return self

    def rule_names(self) -> dict[str, str]:
        """Every guardrail by name -> "hard" or "soft" (output guards are hard)."""
        names = {ALLOWED_DECISION_RULE: "hard"}
        names.update({r.name: "hard" for r in self.output})
        names.update({r.name: "hard" for r in self.hard})
        names.update({r.name: "soft" for r in self.soft})
        return names

    def limit_values(self, facts: dict, overrides: dict[str, float] | None = None) -> dict[str, float]:
        overrides = overrides or {}
        unknown = set(overrides) - set(self.limits)
        if unknown:
            raise KeyError(f"config overrides unknown limits {sorted(unknown)}")
        return {name: lim.value_for(facts, overrides.get(name)) for name, lim in self.limits.items()}


@dataclass
class Verdict:
    decision: str  # after hard rules: one of policy.decisions, or "escalate"
    proposed: str
    blocked_by: list[str] = field(default_factory=list)
    flagged_by: list[str] = field(default_factory=list)
    confidence_factor: float = 1.0
    limits: dict[str, float] = field(default_factory=dict)

    @property
    def overridden(self) -> bool:
        return self.decision != self.proposed

    def as_dict(self) -> dict:
        return {
            "proposed": self.proposed,
            "decision": self.decision,
            "blocked_by": self.blocked_by,
            "flagged_by": self.flagged_by,
            "confidence_factor": round(self.confidence_factor, 4),
            "limits": self.limits,
        }


def load_policy(name_or_path: str | Path) -> Policy:
    path = Path(name_or_path)
    if not path.suffix:
        path = POLICY_DIR / f"{name_or_path}.yaml"
    with open(path) as fh:
        return Policy.model_validate(yaml.safe_load(fh))


def evaluate(
    policy: Policy,
    proposed: str,
    facts: dict,
    stated: dict | None = None,
    limit_overrides: dict[str, float] | None = None,
) -> Verdict:
    """Output guards on what the model said, then hard rules in order, then soft rules."""
    verdict = Verdict(decision=proposed, proposed=proposed)
    if proposed not in policy.decisions and proposed != "escalate":
        verdict.blocked_by.append(ALLOWED_DECISION_RULE)
        verdict.decision = "escalate"
    for rule in policy.output:
        value = (stated or {}).get(rule.stated)
        if value is None:
            continue  # the model stated nothing (the local model states no amounts)
        if rule.must_match not in facts:
            raise KeyError(f"output rule {rule.name!r} needs fact {rule.must_match!r}")
        if abs(float(value) - float(facts[rule.must_match])) > rule.tolerance:
            verdict.blocked_by.append(rule.name)
            verdict.decision = rule.then
    limits = policy.limit_values(facts, limit_overrides)
    verdict.limits = limits
    for rule in policy.hard:
        # Each rule judges the decision as it stands after the rules before it, so a
        # replacement outcome is itself subject to the rules that follow.
        if verdict.decision in rule.forbid and rule.when.holds(facts, limits):
            verdict.blocked_by.append(rule.name)
            verdict.decision = rule.then
    for rule in policy.soft:
        if rule.when.holds(facts, limits):
            verdict.flagged_by.append(rule.name)
            verdict.confidence_factor *= 1.0 - rule.penalty
    return verdict


def hard_violations(
    policy: Policy, final_decision: str, facts: dict, limit_overrides: dict[str, float] | None = None
) -> list[str]:
    """The hard rules a final decision breaks: must be none, whatever any model said.
    Asset checks run this over every decision of a batch, after the fact."""
    if final_decision not in policy.decisions and final_decision != "escalate":
        return [ALLOWED_DECISION_RULE]
    limits = policy.limit_values(facts, limit_overrides)
    return [r.name for r in policy.hard if final_decision in r.forbid and r.when.holds(facts, limits)]
