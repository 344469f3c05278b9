"""`bosun audit verify / show / search / archive`: the audit log from the command line.

`show EVENT` prints one event's chain in the order a decision was made: the event, the
context it was made from (hash, sources), the model and prompt version, the output and
its confidence factors, the guardrails' verdicts, approvals, actions and compensations,
the end state, and the batch's check results. Records of kinds this command does not know
(a review, say) are shown under "other" rather than hidden.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

from orchestration.cli.common import fail
from orchestration.core import clock

APPROVAL_KINDS = ("approval", "review", "feedback")
BATCH_KINDS = ("check", "guardrail_activations")


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _db():
    from orchestration.cli.common import Stores

    return Stores()


def _events(db, event: str) -> list[dict]:
    """The idempotency keys an event id or key names (an id may exist under several sources)."""
    import sqlalchemy as sa  # here, not at import: `bosun --version` and `--help` need no SQLAlchemy

    from orchestration.core.db import inbox as inbox_table

    with db.inbox().engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(
                    inbox_table.c.idempotency_key, inbox_table.c.status, inbox_table.c.reason, inbox_table.c.batch_id
                ).where(sa.or_(inbox_table.c.event_id == event, inbox_table.c.idempotency_key == event))
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows] or [{"idempotency_key": event, "status": None, "reason": None, "batch_id": None}]


def _dict(value) -> dict:
    # Records are JSON written by any workflow: a field of another shape is shown, never a crash.
    return value if isinstance(value, dict) else ({} if value is None else {"value": value})


def _list(value) -> list:
    return value if isinstance(value, list) else ([] if value is None else [value])


def _number(value) -> float:
    return value if isinstance(value, (int, float)) else 0


def chain(db, row: dict) -> dict:
    """One event's audit chain, in the order the decision was made."""
    from orchestration.audit.records import DecisionRecord

    audit = db.audit()
    key = row["idempotency_key"]
    records = audit.records_for(key)
    decisions = [r for r in records if r["kind"] == "decision"]
    # The decision loop's earlier passes (orchestration/decision/loop.py): what was proposed,
    # and why the loop went round again, before the final decision's own steps.
    passes = [
        {"step": "pass", "seq": r["seq"], "batch": r["batch_id"], "recorded_at": r["recorded_at"], **_dict(r["record"])}
        for r in records
        if r["kind"] == "decision_pass"
    ]
    batches = sorted({r["batch_id"] for r in records if r["batch_id"]} | ({row["batch_id"]} - {None}))
    steps: list[dict] = []
    for r in decisions:
        # The typed record (orchestration/audit/records.py): a field stored in another shape is
        # kept aside as it was and shown with the decision, never a crash.
        d = DecisionRecord.read(r["record"]).body()
        used, aside = d["context_used"], d.get("unreadable") or {}
        # An event kept as text, guardrails as a list of names: shown in the shape they have.
        d["event"], d["guardrails"] = aside.pop("event", d["event"]), aside.pop("guardrails", d["guardrails"])
        ref = {"seq": r["seq"], "batch": r["batch_id"], "recorded_at": r["recorded_at"]}
        steps += [
            {"step": "event", **ref, **_dict(d.get("event")), "entity_key": d.get("entity_key")},
            *[p for p in passes if p["seq"] < r["seq"] and all(p is not q for q in steps)],
            {
                "step": "context",
                **ref,
                "context_hash": d.get("context_hash"),
                "sources": {
                    n: {k: _dict(s).get(k) for k in ("status", "age_s", "freshness", "error")}
                    for n, s in _dict(used.get("sources")).items()
                },
                "quality_factors": _list(used.get("quality_factors")),
                "pii_redacted": used.get("pii_redacted"),
                "policy_passages": [
                    f"{_dict(p).get('doc')}#{_dict(p).get('heading')}" for p in _list(used.get("policy_passages"))
                ],
            },
            {
                "step": "model",
                **ref,
                "model": d.get("model"),
                "model_version": d.get("model_version"),
                "prompt_version": d.get("prompt_version"),
                "route_reason": d.get("route_reason"),
                "tokens": _number(d.get("input_tokens")) + _number(d.get("output_tokens")),
                "cost_usd": d.get("cost_usd"),
                "calibrator_version": d.get("calibrator_version"),
            },
            {
                "step": "output",
                **ref,
                "proposed": d.get("proposed"),
                "probabilities": d.get("probabilities"),
                "confidence": d.get("confidence"),
                "confidence_factors": _list(d.get("confidence_breakdown")),
            },
            {"step": "guardrails", **ref, **_dict(d.get("guardrails"))},
            {
                "step": "decision",
                **ref,
                "decision": d.get("decision"),
                "route": d.get("route"),
                "reason": d.get("reason"),
                **({"unreadable": aside} if aside else {}),
            },
        ]
    for r in records:
        ref = {"seq": r["seq"], "batch": r["batch_id"], "recorded_at": r["recorded_at"]}
        if r["kind"] in APPROVAL_KINDS:
            rec = _dict(r["record"])
            who = rec.get("approved_by") or rec.get("reviewer") or rec.get("by")
            steps.append({"step": "approval", "kind": r["kind"], "by": who, **ref, **rec})
    for kind in ("action", "compensation", "outcome"):
        # An action record's own "step" is the saga step's name: kept as "action".
        steps += [
            {
                **{("action" if k == "step" else k): v for k, v in _dict(r["record"]).items()},
                "step": kind,
                "seq": r["seq"],
                "batch": r["batch_id"],
                "recorded_at": r["recorded_at"],
            }
            for r in records
            if r["kind"] == kind
        ]
    for b in batches:
        for r in audit.batch_records(b, ("check",)):
            steps.append(
                {"step": "checks", "seq": r["seq"], "batch": b, "recorded_at": r["recorded_at"], **_dict(r["record"])}
            )
    known = {"decision", "decision_pass", "action", "compensation", "outcome", *APPROVAL_KINDS}
    steps += [
        {"step": "other", "kind": r["kind"], "seq": r["seq"], **_dict(r["record"])}
        for r in records
        if r["kind"] not in known
    ]
    return {
        "event": key,
        "status": row["status"],
        "reason": row["reason"],
        "batch": row["batch_id"],
        "records": len(records),
        "chain": steps,
    }


def _fmt_step(s: dict) -> str:
    try:
        return _fmt_known_step(s)
    except (KeyError, TypeError, ValueError, AttributeError):
        # A record of a shape this printer does not know (another workflow's decision): its
        # fields as JSON rather than a crash; `--json` shows everything either way.
        return _fmt_other(s)


def _fmt_other(s: dict) -> str:
    seq = f"#{s['seq']:<6}" if isinstance(s.get("seq"), int) else "       "
    return (
        f"{seq} {s.get('kind', s['step']):<10} "
        + json.dumps({k: v for k, v in s.items() if k not in ("step", "seq", "kind")}, default=str)[:200]
    )


def _fmt_known_step(s: dict) -> str:
    step = s["step"]
    seq = f"#{s['seq']:<6}" if s.get("seq") is not None else "       "
    if step == "event":
        if "value" in s:  # an event recorded as text by another workflow
            return f"{seq} event      {s['value']}, entity {s.get('entity_key')}"
        return (
            f"{seq} event      {s.get('type')} v{s.get('schema_version')} from {s.get('source')} id {s.get('id')}, "
            f"occurred {s.get('occurred_at')}, entity {s.get('entity_key')}, payload sha256 {s.get('payload_sha256')}"
        )
    if step == "context":
        src = ", ".join(
            f"{n} {v['status']}"
            + (f" {v['age_s']:.0f}s" if v.get("age_s") is not None else "")
            + (f" {v['freshness']}" if v.get("freshness") else "")
            for n, v in s["sources"].items()
        )
        qf = "; ".join(f"{f['name']} -{f['penalty']}" for f in s["quality_factors"]) or "none"
        return f"{seq} context    hash {s['context_hash']}; sources: {src or 'none'}; quality factors: {qf}" + (
            f"; PII redacted: {', '.join(s['pii_redacted'])}" if s.get("pii_redacted") else ""
        )
    if step == "model":
        return (
            f"{seq} model      {s['model']} ({s['model_version']}), prompt {s['prompt_version'] or '-'}, "
            f"{s['route_reason']}; {s['tokens']} tokens, ${s['cost_usd']}"
        )
    if step == "output":
        factors = " x ".join(
            f"{f['name']} {f['value']}" if "value" in f else f"(1 - {f.get('penalty')} {f['name']})"
            for f in s["confidence_factors"]
        )
        probs = ", ".join(f"{k} {v:.3f}" for k, v in (s.get("probabilities") or {}).items())
        return f"{seq} output     proposed {s['proposed']} ({probs}); confidence {s['confidence']} = {factors}"
    if step == "guardrails":
        if "value" in s:  # guardrails recorded as a list of the names that fired
            return f"{seq} guardrails fired: {', '.join(str(g) for g in _list(s['value'])) or 'none'}"
        return (
            f"{seq} guardrails proposed {s.get('proposed')} -> {s.get('decision')}; blocked by "
            f"{', '.join(s.get('blocked_by') or []) or 'none'}; flagged by {', '.join(s.get('flagged_by') or []) or 'none'}"
        )
    if step == "pass":
        return (
            f"{seq} pass       {s.get('pass')} of {s.get('of')} ({s.get('why')}): {s.get('model')} proposed "
            f"{s.get('proposed')} -> {s.get('decision')}, confidence {s.get('confidence')}"
            + (f", blocked by {', '.join(s['blocked_by'])}" if s.get("blocked_by") else "")
            + f"; then {s.get('next')}"
        )
    if step == "decision":
        aside = f"; stored in another shape: {json.dumps(s['unreadable'], default=str)}" if s.get("unreadable") else ""
        return f"{seq} decision   {s['decision']} -> {s['route']}: {s['reason']}" + aside
    if step == "approval":
        return f"{seq} approval   {s['kind']} by {s.get('by')}" + (f": {s.get('reason')}" if s.get("reason") else "")
    if step in ("action", "compensation"):
        return f"{seq} {step:<10} {s.get('action')} [{s.get('action_key')}] {s.get('status')}" + (
            f" ({s['error']})" if s.get("error") else ""
        )
    if step == "outcome":
        return f"{seq} outcome    {s.get('status')}: {s.get('reason')}"
    if step == "checks":
        res = ", ".join(f"{n} {'passed' if c.get('passed') else 'FAILED'}" for n, c in (s.get("checks") or {}).items())
        return f"{seq} checks     batch {s['batch']}: {res}"
    return _fmt_other(s)


def _text(c: dict) -> str:
    head = f"event {c['event']}: {c['status']} ({c['reason']}), batch {c['batch']}, {c['records']} audit records"
    lines = [head]
    steps = [s["step"] for s in c["chain"]]
    for i, s in enumerate(c["chain"]):
        lines.append("  " + _fmt_step(s))
        last_decision = s["step"] == "decision" and "decision" not in steps[i + 1 :]
        if last_decision and "approval" not in steps:
            lines.append("          approval   none")
        if last_decision and "action" not in steps:
            lines.append("          action     none")
    if c["records"] == 0:
        lines.append("  no audit records (unknown event, or pruned: see the audit archive)")
    return "\n".join(lines)


def anchors_of_instance(audit, from_seq: int) -> dict:
    """The chain against the heads published in the Dagster instance at DAGSTER_HOME."""
    import os

    from orchestration.audit.anchors import check_anchors, read_anchors

    if not os.environ.get("DAGSTER_HOME"):
        return {"ok": True, "anchors": 0, "checked": 0, "note": "no anchors found (DAGSTER_HOME is not set)"}
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        anchors = read_anchors(instance)
    return check_anchors(audit, anchors, from_seq, audit.head()[0])


def cmd_verify(args) -> int:
    audit = _db().audit()
    result = audit.verify()
    if args.archives:
        from orchestration.audit.retention import verify_archives  # imports Dagster (the archive asset)

        result.archives = verify_archives(audit)
    result.anchors = anchors_of_instance(audit, result.from_seq)
    out = result.as_dict()
    _print(out)
    ok = result.ok and (not args.archives or result.archives["ok"]) and result.anchors["ok"]
    if not result.ok:
        print(
            f"bosun: audit chain broken at record {result.first_bad_seq}"
            + (f" ({result.kind} {result.subject})" if result.subject else "")
            + f": {result.problem}",
            file=sys.stderr,
        )
    elif args.archives and not result.archives["ok"]:
        a = result.archives
        print(f"bosun: audit archive broken at record {a.get('first_bad_seq')}: {a.get('problem')}", file=sys.stderr)
    # A note ("no anchors found") is part of the JSON answer, not an error on stderr.
    if not result.anchors["ok"]:
        print(f"bosun: audit chain disagrees with its anchors: {result.anchors['problem']}", file=sys.stderr)
    return 0 if ok else 1


def cmd_show(args) -> int:
    db = _db()
    chains = [chain(db, row) for row in _events(db, args.event)]
    if not any(c["records"] for c in chains) and all(c["status"] is None for c in chains):
        return fail(f"no event {args.event!r} in the inbox or the audit log")
    print(json.dumps(chains, indent=2, default=str) if args.json else "\n\n".join(_text(c) for c in chains))
    return 0


def _when(text: str | None) -> datetime | None:
    """ISO date or datetime (UTC unless it says), or a relative age such as 7d / 12h."""
    if not text:
        return None
    if text[-1] in "dhm" and text[:-1].isdigit():
        unit = {"d": "days", "h": "hours", "m": "minutes"}[text[-1]]
        return clock.now() - timedelta(**{unit: int(text[:-1])})
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def _summary(r: dict) -> str:
    rec = _dict(r["record"])
    if r["kind"] == "decision":
        g = _dict(rec.get("guardrails"))
        fired = [str(x) for x in _list(g.get("blocked_by")) + _list(g.get("flagged_by"))]
        return (
            f"{rec.get('decision')} -> {rec.get('route')} conf {rec.get('confidence')} {rec.get('model')}"
            f" entity {rec.get('entity_key')}" + (f" guardrails {','.join(fired)}" if fired else "")
        )
    if r["kind"] == "check":
        return ", ".join(
            f"{n} {'passed' if _dict(c).get('passed') else 'FAILED'}" for n, c in _dict(rec.get("checks")).items()
        )
    return json.dumps(rec, default=str)[:120]


def cmd_search(args) -> int:
    found = (
        _db()
        .audit()
        .search(
            kinds=args.kind or None,
            subject=args.subject,
            batch=args.batch,
            since=_when(args.since),
            until=_when(args.until),
            entity=args.entity,
            decision=args.decision,
            guardrail=args.guardrail,
            model=args.model,
            limit=args.limit,
            newest_first=args.newest_first,
        )
    )
    if args.json:
        _print(found)
        return 0
    for r in found:
        print(f"#{r['seq']:<7} {r['recorded_at']:%Y-%m-%d %H:%M:%S} {r['kind']:<13} {r['subject']}  {_summary(r)}")
    print(f"{len(found)} record(s)" + (" (limit reached)" if args.limit and len(found) >= args.limit else ""))
    return 0


def cmd_archive(args) -> int:
    from orchestration.audit.retention import ChainBroken, archive_and_prune, archive_dir, retention_days

    days = args.older_than_days or retention_days()
    cutoff = clock.now() - timedelta(days=days)
    try:
        out = archive_and_prune(_db().audit(), cutoff, archive_dir())
    except ChainBroken as err:
        return fail(str(err))
    _print({"retention_days": days, **out})
    return 0


def add_commands(sub) -> None:
    s = sub.add_parser("audit", help="the audit log: verify, show, search, archive")
    asub = s.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser(
        "verify",
        help="check the keyed hash chain (and the heads published in the Dagster "
        "instance at DAGSTER_HOME); exit 1 naming the first bad record",
    )
    v.add_argument("--archives", action="store_true", help="also verify every retention archive")
    v.set_defaults(func=cmd_verify)
    v = asub.add_parser(
        "show", help="one event's chain: event, context, model, output, guardrails, approval, actions, checks"
    )
    v.add_argument("event", help="event id or idempotency key")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_show)
    v = asub.add_parser("search", help="records by entity, time, decision, guardrail, model, kind")
    v.add_argument("--entity")
    v.add_argument("--since", help="ISO date/time (UTC unless stated) or an age: 7d, 12h, 30m")
    v.add_argument("--until")
    v.add_argument("--decision", help="final decision, route or proposal (approve, hold, reject, escalate...)")
    v.add_argument("--guardrail", help="a guardrail that blocked or flagged")
    v.add_argument("--model", help="model name or version")
    v.add_argument("--kind", action="append", help="record kind (repeatable): decision, action, outcome, check...")
    v.add_argument("--subject", help="an event's idempotency key (or a batch id)")
    v.add_argument("--batch")
    v.add_argument("--limit", type=int, default=100)
    v.add_argument("--newest-first", action="store_true")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_search)
    v = asub.add_parser("archive", help="archive and prune records past retention now (as the schedule does)")
    v.add_argument("--older-than-days", type=int, help="default BOSUN_AUDIT_RETENTION_DAYS (365)")
    v.set_defaults(func=cmd_archive)
