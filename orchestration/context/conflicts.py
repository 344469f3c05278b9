"""Conflicts between sources, resolved by a declared rule and recorded.

A rule is data: which field, how to choose (`source_priority`, `recency`, or
`must_agree` when no source can be trusted over another), whether the field matters to
the decision, and how much an unresolved conflict lowers confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Literal, Mapping

from orchestration.context.sources import Snapshot, SourceReading


@dataclass(frozen=True)
class ConflictRule:
    field: str
    rule: Literal["source_priority", "recency", "must_agree"]
    priority: tuple[str, ...] = ()
    tolerance: float = 0.0  # numeric values closer than this agree
    matters: bool = True
    penalty: float = 0.3  # confidence factor (1 - penalty) when unresolved and it matters


@dataclass(frozen=True)
class Claim:
    source: str
    value: Any
    as_of: datetime | None = None


def _same(a: Any, b: Any, tolerance: float) -> bool:
    try:
        return abs(float(a) - float(b)) <= tolerance
    except (TypeError, ValueError):
        return a == b


def resolve(rule: ConflictRule, claims: list[Claim]) -> dict | None:
    """None when the sources agree; else the recorded conflict with the rule's choice,
    or `resolved: False` when the rule cannot choose."""
    claims = [c for c in claims if c.value is not None]
    if len(claims) < 2 or all(_same(claims[0].value, c.value, rule.tolerance) for c in claims[1:]):
        return None
    chosen: Claim | None = None
    if rule.rule == "source_priority":
        ranked = [c for s in rule.priority for c in claims if c.source == s]
        chosen = ranked[0] if ranked else None
    elif rule.rule == "recency":
        dated = sorted((c for c in claims if c.as_of is not None), key=lambda c: c.as_of, reverse=True)
        if dated and (len(dated) == 1 or dated[0].as_of > dated[1].as_of):
            chosen = dated[0]
    return {
        "field": rule.field,
        "rule": rule.rule,
        "resolved": chosen is not None,
        "matters": rule.matters,
        "claims": [
            {"source": c.source, "value": _plain(c.value), "as_of": c.as_of.isoformat() if c.as_of else None}
            for c in claims
        ],
        "chosen_source": chosen.source if chosen else None,
        "value": _plain(chosen.value) if chosen else None,
    }


def quality_factor(conflict: dict, rule: ConflictRule) -> dict | None:
    if conflict["resolved"] or not rule.matters:
        return None
    values = ", ".join(f"{c['source']}={c['value']}" for c in conflict["claims"])
    return {
        "name": f"unresolved_conflict:{rule.field}",
        "penalty": rule.penalty,
        "detail": f"{rule.rule} cannot choose between {values}",
    }


def recency_rules(kind: str, fields: Iterable[str]) -> dict[str, ConflictRule]:
    """A system of record read live against its own snapshot: the newer reading wins, per field."""
    return {f"{kind}.{f}": ConflictRule(f"{kind}.{f}", "recency") for f in fields}


def live_vs_snapshot(
    kind: str, origin: str, live: SourceReading, snapshot: Snapshot, fields: Iterable[str]
) -> dict[Any, list[dict]]:
    """Per key, the recorded conflicts between a source's live rows and its snapshot's rows
    (`kind`: what a row is, `origin.kinds` the live source's name), resolved by recency."""
    rules = recency_rules(kind, fields)
    out: dict[Any, list[dict]] = {}
    for key, row in live.value.items():
        old = snapshot.value.get(key)
        if old is None:
            continue
        for rule in rules.values():
            f = rule.field.split(".", 1)[1]
            c = resolve(
                rule,
                [
                    Claim(f"{origin}.{kind}s (live)", row.get(f), live.as_of),
                    Claim(f"{kind}s snapshot", old.get(f), snapshot.as_of),
                ],
            )
            if c:
                out.setdefault(key, []).append(c)
    return out


def conflict_factors(conflicts: Iterable[dict], rules: Mapping[str, ConflictRule]) -> list[dict]:
    """The quality factors of a record's conflicts, each judged by its field's rule."""
    return [f for c in conflicts if (f := quality_factor(c, rules[c["field"]])) is not None]


def _plain(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
