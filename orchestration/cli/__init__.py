"""`bosun`: the command line. An entry point, so it may load the code location, but only
the commands that need it do (lazily): `bosun status`, `dlq`, `audit`, `explain`, `apikey`
and `metrics` read Bosun's tables directly and answer without importing Dagster.

stdout carries the answer (JSON where the command prints JSON); errors, warnings and
progress go to stderr, and an error exits non-zero (see cli_common.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from orchestration.cli import audit as cli_audit
from orchestration.cli import db as cli_db
from orchestration.cli import dlq as cli_dlq
from orchestration.cli import explain as cli_explain
from orchestration.cli import metrics as cli_metrics
from orchestration.cli import replay as cli_replay
from orchestration.cli import review as cli_review
from orchestration.cli import saga as cli_saga
from orchestration.cli import serve as cli_api
from orchestration.cli.common import fail, print_json, progress, step
from orchestration.core import settings

INGEST_CHUNK = 1000


def _defs():
    with step("Loading the code location"):
        from orchestration.definitions import defs
    return defs


def cmd_ingest(args) -> int:
    from orchestration.trigger.inbox import IngestSummary

    defs = _defs()
    from orchestration.definitions import payload_registry

    try:
        with open(args.file) as fh:
            lines = [line for line in fh if line.strip()]
    except OSError as err:
        return fail(f"cannot read {args.file}: {err.strerror}", 2)
    inbox = defs.resources["bosun_db"].inbox()
    total = IngestSummary()
    with progress() as bar:
        bar.stage(f"Ingesting {Path(args.file).name}", total=len(lines))
        for start in range(0, len(lines), INGEST_CHUNK):
            part = inbox.ingest(lines[start : start + INGEST_CHUNK], payload_registry)
            total.accepted += part.accepted
            total.duplicates += part.duplicates
            total.rejected += [{**r, "line": r["line"] + start} for r in part.rejected]
            bar.advance(len(lines[start : start + INGEST_CHUNK]))
    print_json(total.as_dict())
    return 0


def cmd_status(args) -> int:
    from orchestration.cli.status import inbox_status

    status = inbox_status(settings.database_url())
    if args.json:
        print_json(status.as_dict())
        return 0
    print(
        f"events {status.events_total} (waiting {status.events_waiting}), duplicate deliveries "
        f"{status.duplicate_deliveries}, review items pending {status.review_items_pending}, "
        f"dead letters open {status.dead_letters_open}"
    )
    for state, n in status.events_by_status.items():
        print(f"  {state:<14}{n}")
    return 0


def _with_sample(name: str | None, command: str):
    """The workflows a sample command runs for: the one named, else every one that ships a sample."""
    from orchestration.core.workflows import select_with_sample
    from orchestration.definitions import workflows

    try:
        return select_with_sample(workflows, name, f"bosun {command}")
    except KeyError as err:
        raise SystemExit(fail(f"bosun {command}: {err.args[0]}", 2)) from None


def _one_or_each(out: dict) -> dict:
    # One workflow: its figures as they are; several: by workflow name.
    return next(iter(out.values())) if len(out) == 1 else out


def cmd_sample_data(args) -> int:
    res = _defs().resources
    out = {}
    with progress() as bar:
        for wf in _with_sample(args.workflow, "sample-data"):
            out[wf.name] = wf.sample.prepare(res, settings.sample_dir(), args.events, args.seed, progress=bar)
    print_json(_one_or_each(out))
    return 0


def demo_overridden(environ) -> list[str]:
    """What the demo ignores unless told to keep it: it is self-contained, so every database
    (Bosun's and each workflow's target systems, whatever the workflow calls its
    `BOSUN_*_DATABASE_URL`), the models, the sample and the policies are its home's."""
    databases = [v for v in environ if v.startswith("BOSUN_") and v.endswith("_DATABASE_URL")]
    return sorted({*databases, "BOSUN_DATABASE_URL", "BOSUN_MODEL_DIR", "BOSUN_SAMPLE_DIR", "BOSUN_POLICY_DIR"})


def cmd_demo(args) -> int:
    import tempfile

    home = Path(args.home or tempfile.mkdtemp(prefix="bosun-demo-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["BOSUN_HOME"] = str(home)
    if not args.keep_env:
        for var in demo_overridden(os.environ):
            os.environ.pop(var, None)
    defs = _defs()
    chosen = _with_sample(args.workflow, "demo")
    summaries = {}
    with progress() as bar:
        for wf in chosen:
            # Each workflow's sample and Dagster instance in a folder of its own when there are several.
            wf_home = home if len(chosen) == 1 else home / wf.name
            summaries[wf.name] = {**wf.sample.run_demo(defs, wf_home, args.events, args.seed, progress=bar)}
            summaries[wf.name]["home"] = str(wf_home)
    print_json(_one_or_each(summaries))
    failed = {n: s for n, s in summaries.items() if s["failed_batches"] or not s["audit"]["ok"]}
    if failed:
        return fail(
            "; ".join(
                f"demo of {name} failed: {len(s['failed_batches'])} failed batch(es), audit chain "
                f"{'intact' if s['audit']['ok'] else 'broken'}"
                for name, s in failed.items()
            )
        )
    return 0


def cmd_dev(args) -> int:
    from orchestration.cli.dev import run_dev

    return run_dev(
        host=args.host,
        port=args.port,
        events=args.events,
        workflow=args.workflow,
        seed=args.seed,
        feed_per_tick=args.feed,
        feed_interval=args.feed_interval,
        api_port=args.api_port,
    )


def cmd_outbox(args) -> int:
    from sensors import outbox_relay

    def every_workflows_routing() -> dict:
        from orchestration.definitions import notification_routings

        return notification_routings

    return outbox_relay.cli(args, every_workflows_routing)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bosun", description="Production AI workflows on Dagster.")
    p.add_argument("--version", action="version", version=f"bosun {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", help="store events from a JSONL file in the inbox (once each)")
    s.add_argument("file")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("status", help="events per state, duplicate deliveries, pending reviews, open dead letters")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("sample-data", help="generate sample data, seed the targets, train the local model")
    s.add_argument("--workflow", help="default: every workflow that ships a sample")
    s.add_argument("--events", type=int, default=2000)
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(func=cmd_sample_data)

    s = sub.add_parser("demo", help="run the whole path in-process on generated sample events")
    s.add_argument("--workflow", help="default: every workflow that ships a sample")
    s.add_argument("--events", type=int, default=500)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--home", help="keep the demo's state here (default: a new temp dir)")
    s.add_argument("--keep-env", action="store_true", help="use BOSUN_DATABASE_URL etc. from the environment")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("dev", help="dagster dev (webserver + daemon) with a sample event feeder")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--workflow", help="default: every workflow that ships a sample")
    s.add_argument("--events", type=int, default=2000)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--feed", type=int, default=50, help="events fed per interval")
    s.add_argument("--feed-interval", type=float, default=3.0)
    s.add_argument("--api-port", type=int, default=8080, help="`bosun serve` (HTTP API, reviewer console)")
    s.set_defaults(func=cmd_dev)

    s = sub.add_parser("outbox", help="the notification outbox's relay: send queued messages, show figures")
    osub = s.add_subparsers(dest="outbox_command", required=True)
    r = osub.add_parser("relay", help="send queued messages (as the outbox_relay sensor does)")
    once = r.add_mutually_exclusive_group(required=True)
    once.add_argument("--once", action="store_true", help="one pass, then exit")
    once.add_argument("--loop", action="store_true", help="pass after pass until SIGTERM/Ctrl-C")
    r.add_argument("--interval", type=float, default=5.0, help="seconds between passes that found little")
    r.add_argument("--limit", type=int, default=100, help="messages claimed per pass")
    r.add_argument("--lease-s", type=float, default=60.0, help="how long a claim holds a message")
    r.add_argument("--budget-s", type=float, default=40.0, help="longest a pass sends for")
    st = osub.add_parser("status", help="every workflow's messages per state (JSON)")
    for p_ in (r, st):
        p_.add_argument(
            "--routing", action="append", default=[], help="a workflow's routing file (default: every workflow's)"
        )
    s.set_defaults(func=cmd_outbox)

    cli_audit.add_commands(sub)
    cli_replay.add_commands(sub)
    cli_explain.add_commands(sub)
    cli_saga.add_commands(sub)
    cli_review.add_commands(sub)
    cli_dlq.add_commands(sub)
    cli_api.add_commands(sub)
    cli_metrics.add_commands(sub)
    cli_db.add_commands(sub)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bosun")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as err:  # one line for a person; the traceback with BOSUN_DEBUG=1
        if os.environ.get("BOSUN_DEBUG"):
            raise
        return fail(f"{type(err).__name__}: {err} (BOSUN_DEBUG=1 shows the traceback)")
