"""`bosun explain EVENT`: what one decision was made from, read back from the audit log.

EVENT is an event id (`evt-0000042`) or its idempotency key (`source:id`). The decision
record carries the assembled context's provenance: items kept and dropped with reasons,
each source's state, age and freshness verdict, conflicts and how they were resolved,
knowledge gaps, the quality factors that lowered confidence, and the token count
against the budget.
"""

from __future__ import annotations

import json


def explain(db, event: str) -> list[dict]:
    """One explanation per matching event (an id may exist under several sources)."""
    import sqlalchemy as sa  # here, not at import: `bosun --version` and `--help` need no SQLAlchemy

    from orchestration.core.db import inbox as inbox_table

    inbox = db.inbox()
    with inbox.engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(
                    inbox_table.c.idempotency_key, inbox_table.c.status, inbox_table.c.reason, inbox_table.c.batch_id
                ).where(sa.or_(inbox_table.c.event_id == event, inbox_table.c.idempotency_key == event))
            )
            .mappings()
            .all()
        )
    from orchestration.audit.records import DecisionRecord

    audit = db.audit()
    out = []
    for row in rows:
        chain = audit.records_for(row["idempotency_key"])
        decision = next((DecisionRecord.read(r["record"]).body() for r in chain if r["kind"] == "decision"), None)
        item = {
            "event": row["idempotency_key"],
            "status": row["status"],
            "reason": row["reason"],
            "batch": row["batch_id"],
            "audit": [{"seq": r["seq"], "kind": r["kind"]} for r in chain],
        }
        if decision is not None:
            used = decision.get("context_used", {})
            item["decision"] = {
                k: decision.get(k)
                for k in ("decision", "route", "confidence", "reason", "model", "model_version", "context_hash")
            }
            item["context"] = {
                k: used.get(k)
                for k in ("sources", "conflicts", "quality_factors", "knowledge", "assembly", "policy_passages")
            }
        out.append(item)
    return out


def _text(item: dict) -> str:
    lines = [f"event {item['event']}: {item['status']} ({item['reason']}), batch {item['batch']}"]
    d, c = item.get("decision"), item.get("context")
    if not d:
        return "\n".join(lines + ["  no decision recorded"])
    lines.append(f"decision {d['decision']} -> {d['route']}, confidence {d['confidence']} ({d['model']})")
    for name, s in (c.get("sources") or {}).items():
        age = "?" if s.get("age_s") is None else f"{s['age_s']:.0f}s"
        lines.append(
            f"  source {name:<16} {s['status']:<8} age {age:<8} freshness {s['freshness']}"
            + (f"  error: {s['error']}" if s.get("error") else "")
        )
    for f in c.get("quality_factors") or []:
        lines.append(f"  factor {f['name']} -{f['penalty']}: {f['detail']}")
    for x in c.get("conflicts") or []:
        verdict = f"{x['rule']} chose {x['chosen_source']}" if x["resolved"] else f"UNRESOLVED ({x['rule']})"
        lines.append(
            f"  conflict {x['field']}: "
            + ", ".join(f"{v['source']}={v['value']}" for v in x["claims"])
            + f" -> {verdict}"
        )
    a = c.get("assembly") or {}
    if a:
        lines.append(f"  assembled {a['tokens']}/{a['budget']} tokens ({a['tokenizer']}), hash {a['hash']}")
        for k in a["kept"]:
            lines.append(
                f"    kept    {k['item']} [{k['source']}] {k['tokens']} tokens, {k['form']}"
                + (f": {k['reason']}" if k.get("reason") else "")
            )
        for k in a["dropped"]:
            lines.append(f"    dropped {k['item']} [{k['source']}]: {k['reason']}")
    gaps = (c.get("knowledge") or {}).get("gaps")
    if gaps:
        lines.append(f"  knowledge gaps: {', '.join(gaps)}")
    return "\n".join(lines)


def cmd_explain(args) -> int:
    from orchestration.cli.common import Stores, fail

    found = explain(Stores(), args.event)
    if not found:
        return fail(f"no event {args.event!r} in the inbox")
    print(json.dumps(found, indent=2, default=str) if args.json else "\n\n".join(_text(i) for i in found))
    return 0


def add_commands(subparsers) -> None:
    s = subparsers.add_parser("explain", help="what one event's decision was made from (context provenance)")
    s.add_argument("event", help="event id or idempotency key")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_explain)
