"""`bosun dlq`: list, retry and drop dead letters."""

from __future__ import annotations

from orchestration.cli.common import Stores, fail
from orchestration.cli.common import print_json as _print


def _dead_letters():
    return Stores().dead_letters()


def cmd_list(args) -> int:
    rows = _dead_letters().list(status=None if args.status == "all" else args.status, limit=args.limit)
    _print(
        [
            {
                k: r[k]
                for k in (
                    "id",
                    "event_key",
                    "current_key",
                    "type",
                    "status",
                    "attempts",
                    "retries",
                    "error",
                    "first_failed_at",
                    "last_failed_at",
                    "batch_id",
                    "note",
                )
            }
            for r in rows
        ]
    )
    return 0


def cmd_retry(args) -> int:
    if not args.all and not args.ids:
        return fail("dlq retry: give dead-letter IDs or --all", 2)
    requeued = _dead_letters().retry(None if args.all else args.ids)
    _print({"requeued": requeued})
    missing = set(args.ids or []) - {r["id"] for r in requeued}
    if missing:
        return fail(f"dlq retry: not open (unknown, already retried or dropped): {sorted(missing)}")
    return 0


def cmd_drop(args) -> int:
    dropped = _dead_letters().drop(args.id, args.reason)
    _print({"dropped": args.id if dropped else None})
    if not dropped:
        return fail(f"dlq drop: dead letter {args.id} is not open (unknown, retried or dropped already)")
    return 0


def add_commands(subparsers) -> None:
    s = subparsers.add_parser("dlq", help="dead letters: events that failed after their retry budget")
    sub = s.add_subparsers(dest="dlq_command", required=True)
    ls = sub.add_parser("list", help="dead letters with error, attempts, first and last failure")
    ls.add_argument("--status", default="open", choices=["open", "retried", "dropped", "all"])
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(func=cmd_list)
    rt = sub.add_parser("retry", help="re-enqueue dead letters as new inbox events (picked up by the next batch)")
    rt.add_argument("ids", nargs="*", type=int)
    rt.add_argument("--all", action="store_true")
    rt.set_defaults(func=cmd_retry)
    dr = sub.add_parser("drop", help="give up on a dead letter, saying why")
    dr.add_argument("id", type=int)
    dr.add_argument("--reason", required=True)
    dr.set_defaults(func=cmd_drop)
