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

What every workflow's hook does alike is here too: the prompt version asked for
(`resolve_prompt`), the chat model under another name (`replay_llm`), the routing that sends
every decision a model may take to it (`replay_routing`), the context rebuilt from a record
(`recorded_context`, `replay_contexts`) and what a re-decision answers (`replay_outcome`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Collection, Mapping, Optional

from orchestration.audit.chain import AuditLog


class ReplayError(ValueError):
    """A replay that cannot be made as asked; the CLI shows the message (exit 2)."""


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


def resolve_prompt(version: Optional[str], versions: Mapping[str, Any]) -> Any:
    """The prompt a replay asks with (`versions`: by version and by file name); None keeps the live one."""
    if version is None:
        return None
    if version not in versions:
        raise ReplayError(f"unknown prompt version {version!r}; known: {', '.join(sorted(versions))}")
    return versions[version]


def replay_llm(llm: Any, model: Optional[str]) -> Any:
    """The chat model a replay asks: the configured endpoint under `model`'s name when it names
    an LLM (None and "local" keep the resource as it is)."""
    if model in (None, "local"):
        return llm
    if not llm.enabled:
        raise ReplayError(f"model {model!r} is an LLM, and none is configured (OPENAI_BASE_URL / OPENAI_API_KEY)")
    return llm.model_copy(update={"model": model})


def replay_routing(routing: Any, model: Optional[str], kinds: Collection[str]) -> Any:
    """`model`: None keeps the workflow's routing (local first, the LLM for the unsure); "local"
    decides everything with the local model; any other name sends every decision of `kinds`
    the routing allows to the LLM (a kind it forces to the local model, such as quarantined
    text, never goes)."""
    if model is None:
        return routing
    if model == "local":
        return routing.model_copy(update={"threshold": 0.0, "force": {}})
    never = {kind for kind, to in routing.force.items() if to == "local"}
    force = {kind: "local" if kind in never else "llm" for kind in kinds}
    return routing.model_copy(update={"threshold": 1.0, "force": force})


def recorded_context(rec: dict, passage_text: Mapping[tuple, str], payload: str) -> dict:
    """The fields of a context record every workflow's decision layer reads, as the audit kept
    them (texts redacted; knowledge passages' text from the current documents, by document and
    heading); the workflow adds its own (`payload`: the field holding the event's input)."""
    if "facts" not in rec or payload not in rec:
        raise ReplayError("decision record without facts and input: recorded before replay was possible")
    used = rec.get("context_used") or {}
    passages = [
        {**p, "text": passage_text.get((p.get("doc"), p.get("heading")), "")} for p in used.get("policy_passages") or []
    ]
    return {
        "key": None,
        "entity_key": rec.get("entity_key"),
        "context_hash": rec.get("context_hash"),
        "event": rec.get("event"),
        "facts": rec["facts"],
        payload: rec[payload],
        "guarded": used.get("guarded") or {},
        "policy_passages": passages,
        "sources": used.get("sources") or {},
        "conflicts": used.get("conflicts") or [],
        "quality_factors": used.get("quality_factors") or [],
        "knowledge": used.get("knowledge") or {},
        "assembly": used.get("assembly") or {},
    }


def replay_contexts(records: list[dict], index: Any, rebuild: Callable[[dict, dict], dict]) -> list[dict]:
    """The contexts of the records, rebuilt by the workflow (`rebuild(record, passage_text)`)
    with the knowledge passages' text from `index`; each keyed by its position, not its event:
    nothing downstream may key on it."""
    text = {(p.doc, p.heading): p.text for p in index.passages}
    contexts = []
    for i, rec in enumerate(records):
        c = rebuild(rec, text)
        c["key"] = f"replay:{i}"
        contexts.append(c)
    return contexts


def replay_outcome(decision: dict) -> dict:
    """What a re-decision answers the engine (see `ReplayHook`)."""
    return {
        "decision": decision["final_decision"],
        **{k: decision[k] for k in ("route", "confidence", "model", "model_version", "prompt_version")},
    }


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
