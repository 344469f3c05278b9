"""`bosun replay`: re-decide past decisions with another prompt version or model, acting on
nothing, and print the decision diff and the accuracy change."""

from __future__ import annotations

import json
import sys

from orchestration.cli.audit import _when


def _fmt(d: dict) -> str:
    return (
        f"{d['decision']}/{d['route']} ({d['confidence']}, {d['model']}"
        + (f", {d['prompt_version']}" if d.get("prompt_version") else "")
        + ")"
    )


def _text(out: dict, show: int) -> str:
    lines = [
        f"replay {out['workflow']}: {out['decisions']} decisions re-decided with prompt "
        f"{out['prompt_version'] or '(live)'}, model {out['model'] or '(routing)'}; nothing executed",
        f"changed {out['changed']} of {out['decisions']} (unchanged {out['unchanged']})"
        + (f"; {out['not_replayable']} older records lack what a replay needs" if out["not_replayable"] else ""),
    ]
    for t, n in sorted(out["transitions"].items(), key=lambda x: -x[1]):
        lines.append(f"  {t:<40} {n}")
    for c in out["changes"][:show]:
        lines.append(
            f"  {c['event']}: {_fmt(c['old'])} -> {_fmt(c['new'])}"
            + (f"  label {c['label']}" if c.get("label") else "")
        )
    if out["changed"] > show:
        lines.append(f"  ... {out['changed'] - show} more (--json for all)")
    b, a = out["before"], out["after"]
    if out["label_source"]:
        lines.append(
            f"accuracy ({out['label_source']} labels, {b['labelled']} labelled): {b['accuracy']} -> "
            f"{a['accuracy']} (change {out['accuracy_change']:+}); decided without a person "
            f"{b['decided_without_person']} -> {a['decided_without_person']}; escalation rate "
            f"{b['escalation_rate']} -> {a['escalation_rate']}"
            if out["accuracy_change"] is not None
            else f"accuracy ({out['label_source']} labels): {b['accuracy']} -> {a['accuracy']}"
        )
    else:
        lines.append("accuracy: no labels (no reviewer feedback, no sample labels)")
    return "\n".join(lines)


def cmd_replay(args) -> int:
    from orchestration.audit.replay import replay
    from orchestration.audit.retention import read_archived
    from orchestration.definitions import build_definitions, replay_workflows

    name = args.workflow or (next(iter(replay_workflows)) if len(replay_workflows) == 1 else None)
    hook = replay_workflows.get(name)
    if hook is None:
        known = ", ".join(replay_workflows) or "none"
        wanted = f"unknown workflow {name!r}" if args.workflow else "say which workflow with --workflow"
        print(f"bosun replay: {wanted}; known: {known}", file=sys.stderr)
        return 2
    # Built now, not at import: the LLM resource follows the environment of this call.
    resources = build_definitions().resources
    db = resources["bosun_db"]
    audit = db.audit()
    try:
        report = replay(
            audit,
            hook,
            resources,
            since=_when(args.since),
            until=_when(args.until),
            prompt_version=args.prompt_version,
            model=args.model,
            limit=args.limit,
            feedback_labels=db.feedback().labels(hook.workflow),
            archived=read_archived(audit) if audit.checkpoints() else (),
        )
    except ValueError as err:  # an unknown prompt version, an LLM model without an LLM...
        print(str(err), file=sys.stderr)
        return 2
    out = report.as_dict()
    print(json.dumps(out, indent=2, default=str) if args.json else _text(out, args.show))
    return 0


def add_commands(sub) -> None:
    s = sub.add_parser(
        "replay",
        help="re-decide past decisions with another prompt version or model; "
        "acts on nothing; prints the diff and the accuracy change",
    )
    s.add_argument(
        "--prompt-version",
        help="a prompt version (NAME-<hash>) or a prompt file name in the workflow's prompts/ folder; default the live prompt",
    )
    s.add_argument("--model", help="'local', or an LLM model name; default the workflow's routing")
    s.add_argument("--since", required=True, help="ISO date/time (UTC unless stated) or an age: 7d, 12h")
    s.add_argument("--until")
    s.add_argument("--limit", type=int, help="at most this many decisions (oldest first)")
    s.add_argument("--workflow", help="default: the only workflow with a replay hook")
    s.add_argument("--show", type=int, default=50, help="changed events listed in the text output")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_replay)
