"""`bosun saga ...`: the action layer by hand (`bosun review` is in cli_review.py).

An entry point: it loads the code location to find each workflow's saga executor.
"""

from __future__ import annotations

import json
import os
import socket

from orchestration.cli.common import fail


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _workflows():
    from orchestration.definitions import defs, saga_workflows

    return defs.resources, saga_workflows


def _holder() -> str:
    return f"cli:{socket.gethostname()}:{os.getpid()}"


def _summary(out) -> dict:
    return {
        "done": len(out.done),
        "compensated": sum(1 for f in out.failed.values() if not f.get("compensation_error")),
        "escalated": {k: f["compensation_error"] for k, f in out.failed.items() if f.get("compensation_error")},
        "refused": {k: r["reason"] for k, r in out.refused.items()},
        "deferred": out.deferred,
        "in_doubt": out.unfinished,
    }


def cmd_recover(args) -> int:
    resources, workflows = _workflows()
    report = {}
    for name, wf in workflows.items():
        if args.workflow and name != args.workflow:
            continue
        out = wf.saga_executor(resources, _holder()).recover(args.batch)
        wf.record_settled(resources, out, "recovered")
        report[name] = _summary(out)
    _print(report)
    return 0 if not any(r["deferred"] or r["in_doubt"] for r in report.values()) else 1


def cmd_rollback(args) -> int:
    from orchestration.action.saga_log import SagaLog

    resources, workflows = _workflows()
    # The saga's own workflow, from its log, unless one is named.
    logged = SagaLog(resources["bosun_db"].resolved_url).load([args.saga_id]).get(args.saga_id)
    name = args.workflow or (logged or {}).get("workflow")
    if name not in workflows:
        return fail(
            f"bosun saga rollback: no saga {args.saga_id!r}"
            if logged is None and not args.workflow
            else f"bosun saga rollback: unknown workflow {name!r}; known: {', '.join(workflows)}"
        )
    wf = workflows[name]
    steps = [s for s in (args.steps or "").split(",") if s] or None
    out = wf.saga_executor(resources, _holder()).rollback(args.saga_id, steps)
    _print({"saga": args.saga_id, **_summary(out), "undone": {k: f["compensated"] for k, f in out.failed.items()}})
    return 0 if not out.deferred and not any(f.get("compensation_error") for f in out.failed.values()) else 1


def cmd_show(args) -> int:
    from orchestration.action.saga_log import SagaLog

    resources, _ = _workflows()
    _print(SagaLog(resources["bosun_db"].resolved_url).load([args.saga_id]).get(args.saga_id))
    return 0


def add_commands(sub) -> None:
    s = sub.add_parser("saga", help="the action layer's sagas: recover, roll back, show")
    ssub = s.add_subparsers(dest="saga_command", required=True)
    r = ssub.add_parser("recover", help="resume or compensate every unfinished saga from the log")
    r.add_argument("--workflow")
    r.add_argument("--batch")
    r.set_defaults(func=cmd_recover)
    r = ssub.add_parser("rollback", help="undo a saga's steps (and what depends on them), verified")
    r.add_argument("saga_id")
    r.add_argument("--steps", help="comma-separated step names (default: all)")
    r.add_argument("--workflow", help="default: the saga's own workflow, from its log")
    r.set_defaults(func=cmd_rollback)
    r = ssub.add_parser("show", help="a saga's state and steps")
    r.add_argument("saga_id")
    r.set_defaults(func=cmd_show)
