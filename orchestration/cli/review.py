"""`bosun review list / show / approve / reject / correct`: the review queue by hand.

An entry point over `orchestration/review/answers.py` (the HTTP API uses the same service). Exit
codes: 0 done, 2 unknown item or invalid answer, 3 already decided (nothing was done).
"""

from __future__ import annotations

import json
import sys

EXIT = {"not_found": 2, "invalid": 2, "conflict": 3}


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def service():
    from orchestration.definitions import defs, review_workflows
    from orchestration.review.answers import ReviewService, default_holder

    return ReviewService(
        defs.resources["bosun_db"].resolved_url, defs.resources, review_workflows, default_holder("cli")
    )


def _answer(fn) -> int:
    from orchestration.review.answers import ReviewError

    try:
        _print(fn())
    except ReviewError as err:
        print(f"bosun review: {err.message}", file=sys.stderr)
        return EXIT[err.code]
    return 0


def _table(items: list[dict]) -> str:
    lines = [f"{'ID':>6}  {'STATUS':<9} {'KIND':<13} {'PROPOSED':<8} {'CONF':>5}  {'EVENT':<28} REASON"]
    for it in items:
        conf = "" if it["confidence"] is None else f"{it['confidence']:.2f}"
        by = f" [{it['answer']['by']}: {it['answer']['label']}]" if it["answer"] else ""
        lines.append(
            f"{it['id']:>6}  {it['status']:<9} {it['kind']:<13} {it['proposed'] or '-':<8} {conf:>5}  "
            f"{it['event']:<28} {it['reason']}{by}"
        )
    return "\n".join(lines)


def cmd_list(args) -> int:
    from orchestration.review.answers import ReviewError

    try:
        items = service().list(args.status, args.workflow, args.limit)
    except ReviewError as err:
        print(f"bosun review: {err.message}", file=sys.stderr)
        return EXIT[err.code]
    if args.json:
        _print(items)
    else:
        print(_table(items) if items else f"no {args.status} review items")
    return 0


def cmd_show(args) -> int:
    return _answer(lambda: service().show(args.id))


def cmd_approve(args) -> int:
    return _answer(lambda: service().approve(args.id, args.by, args.note))


def cmd_reject(args) -> int:
    return _answer(lambda: service().reject(args.id, args.by, args.reason, args.label))


def cmd_correct(args) -> int:
    return _answer(lambda: service().correct(args.target, args.label, args.by, args.note, workflow=args.workflow))


def add_commands(sub) -> None:
    s = sub.add_parser("review", help="the review queue: list, show, approve, reject, correct")
    rsub = s.add_subparsers(dest="review_command", required=True)
    r = rsub.add_parser("list", help="review items (pending by default)")
    r.add_argument("--status", default="pending", help="pending, approved, rejected or all")
    r.add_argument("--workflow")
    r.add_argument("--limit", type=int, default=100)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_list)
    r = rsub.add_parser("show", help="an item with its event's full decision record and audit trail")
    r.add_argument("id", type=int)
    r.set_defaults(func=cmd_show)
    r = rsub.add_parser("approve", help="accept what Bosun proposed; a plan or payment executes once")
    r.add_argument("id", type=int)
    r.add_argument("--by", required=True, help="who approves (recorded)")
    r.add_argument("--note")
    r.set_defaults(func=cmd_approve)
    r = rsub.add_parser("reject", help="refuse what Bosun proposed; nothing acts")
    r.add_argument("id", type=int)
    r.add_argument("--by", required=True, help="who rejects (recorded)")
    r.add_argument("--reason", required=True)
    r.add_argument("--label", help="the right decision (default: the workflow's, e.g. reject for a payment)")
    r.set_defaults(func=cmd_reject)
    r = rsub.add_parser("correct", help="the right label for any decision, past or pending (feedback only)")
    r.add_argument("target", help="a review item id, or an event (source:id, or its id)")
    r.add_argument("--label", required=True)
    r.add_argument("--by", required=True, help="who corrects (recorded)")
    r.add_argument("--note")
    r.add_argument("--workflow", help="when the event's type does not say")
    r.set_defaults(func=cmd_correct)
