"""Replay: re-decide past decisions with another prompt version or model, acting on nothing.

The audit's decision records are the archive: each holds what the decision was made from
(facts, redacted input, context provenance). A workflow's replay hook rebuilds its contexts
from them and runs its decision layer with the requested prompt and model, without a
ledger, a cache, a saga or an audit write. The engine compares old and new per event and,
where labels exist (a reviewer's label for an event wins over the workflow's sample label),
the accuracy before and after.

Accuracy counts the decisions made without a person (route other than escalate) whose
final decision matches the label, as `bosun demo` does; the escalation rate is shown beside
it, because a prompt that escalates everything is trivially "accurate".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional

from orchestration.audit.chain import AuditLog


@dataclass(frozen=True)
class ReplayHook:
    """What a workflow offers to replay: which records are its own, how to re-decide them
    (records, prompt_version, model, resources) -> one dict per record with `subject`,
    `decision`, `route`, `model`, `prompt_version`, `confidence`, and its sample labels
    (event id -> label) when it has any."""

    workflow: str
    event_types: tuple[str, ...]
    redecide: Callable[[list[dict], Optional[str], Optional[str], dict], list[dict]]
    sample_labels: Callable[[], dict[str, str]] = lambda: {}
    # Records written before the workflow kept what a replay needs are counted, not replayed.
    replayable: Callable[[dict], bool] = lambda record: True


@dataclass
class ReplayReport:
    workflow: str
    prompt_version: Optional[str]
    model: Optional[str]
    decisions: int = 0
    not_replayable: int = 0
    changed: list[dict] = field(default_factory=list)
    transitions: dict[str, int] = field(default_factory=dict)
    label_source: Optional[str] = None
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    new_prompt_versions: dict[str, int] = field(default_factory=dict)
    new_models: dict[str, int] = field(default_factory=dict)

    def as_dict(self, max_changes: int | None = None) -> dict:
        return {
            "workflow": self.workflow,
            "prompt_version": self.prompt_version,
            "model": self.model,
            "decisions": self.decisions,
            "not_replayable": self.not_replayable,
            "changed": len(self.changed),
            "unchanged": self.decisions - len(self.changed),
            "transitions": self.transitions,
            "label_source": self.label_source,
            "accuracy_before": self.before.get("accuracy"),
            "accuracy_after": self.after.get("accuracy"),
            "accuracy_change": _delta(self.before.get("accuracy"), self.after.get("accuracy")),
            "before": self.before,
            "after": self.after,
            "new_prompt_versions": self.new_prompt_versions,
            "new_models": self.new_models,
            "changes": self.changed[:max_changes] if max_changes else self.changed,
        }


def _delta(a, b):
    return None if a is None or b is None else round(b - a, 4)


def decision_records(
    audit: AuditLog,
    event_types: tuple[str, ...],
    since: datetime | None,
    until: datetime | None = None,
    limit: int | None = None,
    archived: list[dict] = (),
) -> list[dict]:
    """The latest decision record per event in the window (a re-run batch may have recorded
    two), oldest first, from the archive and the live log."""
    live = audit.search(kinds=["decision"], since=since, until=until, limit=None)
    latest: dict[str, dict] = {}
    for r in [*archived, *live]:
        at = r["recorded_at"]
        if (since and at < since) or (until and at >= until):
            continue
        if (r["record"].get("event") or {}).get("type") not in event_types:
            continue
        latest[r["subject"]] = r
    out = sorted(latest.values(), key=lambda r: r["seq"])
    return out[:limit] if limit else out


def _score(rows: list[tuple[str, str, str]]) -> dict:
    """rows: (label, decision, route) of the labelled events."""
    auto = [(lab, dec) for lab, dec, route in rows if route != "escalate"]
    correct = sum(1 for lab, dec in auto if lab == dec)
    return {
        "labelled": len(rows),
        "decided_without_person": len(auto),
        "correct": correct,
        "accuracy": round(correct / len(auto), 4) if auto else None,
        "escalation_rate": round(sum(1 for r in rows if r[2] == "escalate") / len(rows), 4) if rows else None,
    }


def compare(
    records: list[dict], new: list[dict], labels: dict[str, str], label_source: Optional[str], report: ReplayReport
) -> ReplayReport:
    report.decisions, report.label_source = len(records), label_source if labels else None
    before, after = [], []
    for r, n in zip(records, new):
        old = r["record"]
        assert n["subject"] == r["subject"], "a replay hook must answer in the order it was asked"
        report.new_prompt_versions[str(n.get("prompt_version"))] = (
            report.new_prompt_versions.get(str(n.get("prompt_version")), 0) + 1
        )
        report.new_models[str(n.get("model"))] = report.new_models.get(str(n.get("model")), 0) + 1
        if (old.get("decision"), old.get("route")) != (n["decision"], n["route"]):
            t = f"{old.get('decision')}/{old.get('route')} -> {n['decision']}/{n['route']}"
            report.transitions[t] = report.transitions.get(t, 0) + 1
            report.changed.append(
                {
                    "event": r["subject"],
                    "seq": r["seq"],
                    "label": labels.get(r["subject"]),
                    "old": {k: old.get(k) for k in ("decision", "route", "confidence", "model", "prompt_version")},
                    "new": {k: n.get(k) for k in ("decision", "route", "confidence", "model", "prompt_version")},
                }
            )
        label = labels.get(r["subject"])
        if label is not None:
            before.append((label, old.get("decision"), old.get("route")))
            after.append((label, n["decision"], n["route"]))
    report.before, report.after = _score(before), _score(after)
    return report


def replay(
    audit: AuditLog,
    hook: ReplayHook,
    resources: dict,
    *,
    since: datetime | None,
    until: datetime | None = None,
    prompt_version: str | None = None,
    model: str | None = None,
    limit: int | None = None,
    feedback_labels: dict[str, str] | None = None,
    archived: list[dict] = (),
) -> ReplayReport:
    found = decision_records(audit, hook.event_types, since, until, limit, archived)
    records = [r for r in found if hook.replayable(r["record"])]
    report = ReplayReport(hook.workflow, prompt_version, model, not_replayable=len(found) - len(records))
    new = hook.redecide([r["record"] for r in records], prompt_version, model, resources) if records else []
    for r, n in zip(records, new):
        n.setdefault("subject", r["subject"])
    # Reviewers' labels win event by event; the sample's labels (sample events only) fill in
    # the rest, so one correction does not shrink the scored set to one event.
    by_event_id = hook.sample_labels()
    labels = {
        r["subject"]: by_event_id[eid]
        for r in records
        if (eid := (r["record"].get("event") or {}).get("id")) in by_event_id
    }
    reviewed = {s: lab for s, lab in (feedback_labels or {}).items()}
    labels.update(reviewed)
    sources = [name for name, used in (("feedback", reviewed), ("sample", len(labels) > len(reviewed))) if used]
    source = "+".join(sources) or None
    return compare(records, new, labels, source, report)
