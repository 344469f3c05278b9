"""The outbox relay: drains every workflow's notification outbox to its channels.

Why a sensor: the daemon that `make run` and the deployment already start evaluates it every
15 s, its ticks (and what each sent) are in the UI, and there is no second long-running
process to deploy and watch. A tick's work is bounded (`budget_s`, well inside Dagster's
60 s sensor deadline), and the same relay runs as a plain process (`bosun outbox relay
--loop`) where a deployment wants sending outside the daemon.

Each pass: read bounce reports; claim messages with a lease (two relays never hold one
message); per message, render it from its workflow's routing, log the attempt, send it,
record the channel's answer; escalate failed and bounced messages to the review queue;
report the pass as the `outbox_deliveries` asset's materialization with its checks.

Delivery is at least once, and at most twice across a crash: a relay killed after the
channel took a message and before it recorded that leaves an unfinished attempt; the next
claim re-sends it once with the same key (and the attempt number and a possible-duplicate
mark), so the receiver can drop the copy. A message with two unfinished attempts is not
sent a third time: it is marked failed (in doubt) and escalated.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

import dagster as dg

from orchestration.core import clock, settings
from orchestration.review.queue import ReviewQueue
from resources.channels import (
    ChannelNotConfigured,
    ChannelResult,
    ContentRefused,
    EmailChannel,
    NotificationRouting,
    email_channel_from_env,
    load_routing,
    read_bounces,
    remove_bounce,
    render,
    utc,
    webhook_for,
)
from resources.database import BosunDatabase
from resources.outbox import Claimed, NotificationOutbox

OUTBOX_DELIVERIES = dg.AssetKey("outbox_deliveries")
TICK_CHECK = "tick_messages_delivered"
BOUNCE_CHECK = "no_late_bounces"
MAX_BACKOFF_S = 3600.0


def relay_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def bounce_dir() -> Path:
    """BOSUN_OUTBOX_BOUNCE_MAILDIR: where bounce reports land (a Maildir the mail server or a
    fetcher writes into), default BOSUN_HOME/outbox/bounces."""
    raw = os.environ.get("BOSUN_OUTBOX_BOUNCE_MAILDIR")
    return Path(raw) if raw else settings.bosun_home() / "outbox" / "bounces"


@dataclass
class PassReport:
    """What one relay pass did; `metadata()` is the numeric asset metadata the UI plots."""

    relay: str
    claimed: int = 0
    outcomes: dict = field(
        default_factory=lambda: {
            k: 0 for k in ("sent", "delivered", "retrying", "failed", "refused", "skipped", "released")
        }
    )
    failed: list = field(default_factory=list)  # {key, workflow, entity, detail}
    bounced: list = field(default_factory=list)
    escalated: int = 0
    latency_s: list = field(default_factory=list)  # queued -> the channel took it
    duration_s: float = 0.0

    @property
    def idle(self) -> bool:
        return self.claimed == 0 and not self.bounced and not self.escalated

    def metadata(self) -> dict:
        lat = sorted(self.latency_s)
        pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: 0.0)
        meta = {f"messages.{k}": v for k, v in self.outcomes.items()}
        meta.update(
            {
                "messages.claimed": self.claimed,
                "messages.bounced": len(self.bounced),
                "messages.escalated": self.escalated,
                "latency_queued_to_sent_p50_s": round(pct(0.5), 3),
                "latency_queued_to_sent_p95_s": round(pct(0.95), 3),
                "latency_queued_to_sent_mean_s": round(statistics.fmean(lat), 3) if lat else 0.0,
                "pass_duration_s": round(self.duration_s, 3),
            }
        )
        return meta


class OutboxRelay:
    def __init__(
        self,
        outbox: NotificationOutbox,
        routings: dict[str, NotificationRouting],
        email: EmailChannel,
        *,
        review: Optional[ReviewQueue] = None,
        holder: Optional[str] = None,
        bounces: Optional[Path] = None,
        lease_s: float = 60.0,
        limit: int = 100,
        budget_s: float = 40.0,
        webhooks: Optional[Callable] = None,
    ):
        self.outbox, self.routings, self.email, self.review = outbox, routings, email, review
        self.holder = holder or relay_name()
        self.bounces = bounces if bounces is not None else bounce_dir()
        self.lease_s, self.limit, self.budget_s = lease_s, limit, budget_s
        self.webhooks = webhooks or webhook_for

    @property
    def workflows(self) -> list[str]:
        return sorted(self.routings)

    def run_once(self) -> PassReport:
        started = time.monotonic()
        report = PassReport(self.holder)
        self._read_bounces(report)
        claimed = self.outbox.claim(self.holder, self.workflows, self.limit, self.lease_s)
        report.claimed = len(claimed)
        # Stop sending well before the lease ends, so no other relay takes a message back
        # while this one may still be sending it.
        deadline = started + min(self.budget_s, self.lease_s * 0.8)
        self._channels: dict = {}
        try:
            for i, item in enumerate(claimed):
                if time.monotonic() > deadline:
                    self.outbox.release(claimed[i:], self.holder)
                    report.outcomes["released"] += len(claimed) - i
                    break
                self._deliver(item, report)
        finally:
            for channel in self._channels.values():
                channel.close()
        self._escalate(report)
        report.duration_s = time.monotonic() - started
        return report

    def loop(self, interval_s: float, stop: Callable[[], bool], on_pass: Optional[Callable] = None) -> None:
        while not stop():
            report = self.run_once()
            if on_pass:
                on_pass(report)
            if report.claimed < self.limit:
                time.sleep(interval_s)

    # ---- one message ---------------------------------------------------------------------
    def _deliver(self, item: Claimed, report: PassReport) -> None:
        msg = item.message
        route = self.routings[msg["workflow"]].recipients.get(msg["recipient_type"] or "")

        def settle(outcome, detail, attempt_id=None, **kw):
            self.outbox.record(item, self.holder, attempt_id, outcome, detail, **kw)
            report.outcomes[outcome] += 1
            if outcome in ("failed", "refused"):
                report.failed.append(
                    {
                        "key": msg["idempotency_key"],
                        "workflow": msg["workflow"],
                        "entity": msg["entity"],
                        "detail": detail,
                    }
                )

        if route is None:
            return settle("refused", f"no route for recipient type {msg['recipient_type']!r}")
        if msg["kind"] == "correction" and msg["corrects"]:
            original = self.outbox.messages([msg["corrects"]]).get(msg["corrects"])
            # The retracted message was refused for good: nothing arrived, nothing to correct.
            if original is not None and original["delivery"] == "failed":
                self.outbox.cancel_claimed(item, self.holder, "the message it corrects never arrived")
                report.outcomes["skipped"] += 1
                return
        if item.in_doubt >= 2:
            return settle("failed", f"in doubt: {item.in_doubt} sends were interrupted; not sent again")
        try:
            out = render(msg, route, attempt=msg["attempts"], in_doubt=item.in_doubt)
            channel = self._channel(msg, route)
        except ContentRefused as err:
            return settle("refused", f"refused: {err}")
        except ChannelNotConfigured as err:
            return settle("retrying", str(err), next_attempt_at=self._next_attempt(msg, route, None))
        attempt_id = self.outbox.begin_attempt(item, self.holder, route.channel)
        if attempt_id is None:  # retracted meanwhile, or no longer ours
            report.outcomes["skipped"] += 1
            return
        try:
            result = channel.send(out)
        except Exception as err:  # a channel bug must not stop the pass; the message is retried
            result = ChannelResult("retrying", f"channel error ({type(err).__name__})")
        if result.outcome == "retrying" and msg["attempts"] >= route.max_deliveries:
            result = ChannelResult("failed", f"gave up after {msg['attempts']} passes: {result.detail}", result.ref)
        if result.outcome in ("sent", "delivered"):
            report.latency_s.append((clock.now() - utc(msg["created_at"])).total_seconds())
        nxt = self._next_attempt(msg, route, result.retry_after_s) if result.outcome == "retrying" else None
        settle(result.outcome, result.detail, attempt_id, ref=result.ref, next_attempt_at=nxt)

    def _channel(self, msg: dict, route):
        """One channel per route and pass: its connection (SMTP, HTTP pool) is reused."""
        key = ("email",) if route.channel == "email" else (msg["workflow"], msg["recipient_type"])
        if key not in self._channels:
            self._channels[key] = self.email.open() if route.channel == "email" else self.webhooks(route)
        return self._channels[key]

    @staticmethod
    def _next_attempt(msg: dict, route, retry_after_s: Optional[float]):
        backoff = min(MAX_BACKOFF_S, route.retry_after_s * 2 ** max(0, msg["attempts"] - 1))
        return clock.now() + timedelta(seconds=max(backoff, retry_after_s or 0.0))

    # ---- what comes back -----------------------------------------------------------------
    def _read_bounces(self, report: PassReport) -> None:
        found = read_bounces(self.bounces)
        if not found:
            return
        report.bounced += self.outbox.record_bounces([b for _, b in found])
        # Removed only once recorded: a relay dying in between reads them again (a no-op).
        for mkey, _ in found:
            remove_bounce(self.bounces, mkey)

    def _escalate(self, report: PassReport) -> None:
        """Failed and bounced messages whose route says so go to the review queue, once."""
        if self.review is None:
            return
        rows = self.outbox.undelivered(self.workflows)
        by_workflow: dict[str, list[dict]] = {}
        done = []
        for m in rows:
            route = self.routings[m["workflow"]].recipients.get(m["recipient_type"] or "")
            done.append(m["id"])
            if route is not None and route.on_undeliverable != "escalate":
                continue
            by_workflow.setdefault(m["workflow"], []).append(
                {
                    "key": f"outbox:{m['idempotency_key']}",
                    "entity_key": m["entity"],
                    "proposal": {
                        "kind": "undelivered_message",
                        "message_key": m["idempotency_key"],
                        "delivery": m["delivery"],
                        "recipient": m["recipient"],
                        "recipient_type": m["recipient_type"],
                        "detail": m["delivery_detail"],
                    },
                    "reason": f"{m['kind']} to {m['recipient']} {m['delivery']}: {m['delivery_detail']}",
                }
            )
        for workflow, items in by_workflow.items():
            self.review.submit(workflow, items)
            report.escalated += len(items)
        self.outbox.mark_escalated(done)


# ---- Dagster: the asset, its checks, the sensor ---------------------------------------------
def _named(rows: list[dict]) -> str:
    return "\n".join(f"- {r['workflow']} {r['key']} ({r.get('entity') or '-'}): {r['detail']}" for r in rows[:50])


def _check_verdicts(report: PassReport) -> list[tuple[str, bool, dg.AssetCheckSeverity, dict]]:
    failed = report.failed
    bounced = [
        {"key": m["idempotency_key"], "workflow": m["workflow"], "entity": m["entity"], "detail": m["delivery_detail"]}
        for m in report.bounced
    ]
    return [
        (
            TICK_CHECK,
            not failed,
            dg.AssetCheckSeverity.ERROR,
            {
                "failed": len(failed),
                "failed_keys": dg.MetadataValue.json([r["key"] for r in failed]),
                "failed_messages": dg.MetadataValue.md(_named(failed) or "none"),
            },
        ),
        (
            BOUNCE_CHECK,
            not bounced,
            dg.AssetCheckSeverity.WARN,
            {
                "bounced": len(bounced),
                "bounced_keys": dg.MetadataValue.json([r["key"] for r in bounced]),
                "bounced_messages": dg.MetadataValue.md(_named(bounced) or "none"),
                "escalated": report.escalated,
            },
        ),
    ]


def check_evaluations(report: PassReport) -> list[dg.AssetCheckEvaluation]:
    """The pass's checks as events a sensor reports."""
    return [
        dg.AssetCheckEvaluation(
            asset_key=OUTBOX_DELIVERIES, check_name=name, passed=passed, severity=sev, metadata=meta
        )
        for name, passed, sev, meta in _check_verdicts(report)
    ]


def check_results(report: PassReport) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(asset_key=OUTBOX_DELIVERIES, check_name=name, passed=passed, severity=sev, metadata=meta)
        for name, passed, sev, meta in _check_verdicts(report)
    ]


def materialization_metadata(report: PassReport, outbox: NotificationOutbox, workflows: list[str]) -> dict:
    """The pass's figures plus every workflow's messages per state (what the UI plots)."""
    totals = outbox.delivery_figures(workflows)
    meta = report.metadata()
    for state in ("queued", "sending", "retrying", "sent", "delivered", "bounced", "failed", "cancelled"):
        meta[f"total.{state}"] = totals.get(state, 0)
    return meta


outbox_check_specs = [
    dg.AssetCheckSpec(
        TICK_CHECK,
        asset=OUTBOX_DELIVERIES,
        description="Every message a relay pass settled was sent or delivered; names those that "
        "failed for good (refused by the receiver or by the content policy).",
    ),
    dg.AssetCheckSpec(
        BOUNCE_CHECK,
        asset=OUTBOX_DELIVERIES,
        description="The delayed check: no bounce came back for a message sent earlier; names the "
        "bounced messages (each escalated to the review queue).",
    ),
]


def build_outbox_deliveries_asset(make_relay: Callable[..., OutboxRelay]) -> dg.AssetsDefinition:
    """`outbox_deliveries`: materializing it by hand runs one relay pass; the sensor reports
    each of its passes as a materialization of the same asset."""

    @dg.asset(
        key=OUTBOX_DELIVERIES,
        group_name="outbox",
        check_specs=outbox_check_specs,
        kinds={"email"},
        description="What each outbox relay pass delivered: sent, delivered, retrying, failed, bounced, "
        "escalated; latency from queued to sent; every workflow's messages per state. The "
        "`outbox_relay` sensor reports each pass that did work; materializing it runs a pass.",
    )
    def outbox_deliveries(
        outbox: NotificationOutbox, outbox_email: EmailChannel, bosun_db: BosunDatabase
    ) -> dg.MaterializeResult:
        relay = make_relay(outbox, outbox_email, bosun_db)
        report = relay.run_once()
        return dg.MaterializeResult(
            metadata=materialization_metadata(report, outbox, relay.workflows), check_results=check_results(report)
        )

    return outbox_deliveries


def build_outbox_relay_sensor(
    make_relay: Callable[..., OutboxRelay], name: str = "outbox_relay", interval_s: int = 15
) -> dg.SensorDefinition:
    """`make_relay(outbox, email, bosun_db)` builds the relay from the sensor's resources."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Drains the notification outbox to email and webhooks; each pass that did work is "
        "a materialization of outbox_deliveries with its checks.",
    )
    def outbox_relay(
        context: dg.SensorEvaluationContext,
        outbox: NotificationOutbox,
        outbox_email: EmailChannel,
        bosun_db: BosunDatabase,
    ):
        relay = make_relay(outbox, outbox_email, bosun_db)
        report = relay.run_once()
        if report.idle:
            return dg.SkipReason("outbox: nothing to send")
        context.log.info(f"outbox relay {relay.holder}: {report.outcomes}, bounced {len(report.bounced)}")
        return dg.SensorResult(
            asset_events=[
                dg.AssetMaterialization(
                    OUTBOX_DELIVERIES, metadata=materialization_metadata(report, outbox, relay.workflows)
                ),
                *check_evaluations(report),
            ]
        )

    return outbox_relay


# ---- the relay as a process: `bosun outbox relay` / `bosun outbox status` ---------------------
def relay_from_environment(routing_files: list[str], default_routings: Callable[[], dict], **kwargs) -> OutboxRelay:
    """The relay with the environment's outbox, email channel and review queue; routings from
    the given files (one per workflow), else every workflow's (`default_routings()`)."""

    paths = (
        {r.workflow: r for r in map(load_routing, routing_files)}
        if routing_files
        else {wf: load_routing(p) for wf, p in default_routings().items()}
    )
    outbox = NotificationOutbox(url=os.environ.get("BOSUN_OUTBOX_DATABASE_URL") or None)
    review = ReviewQueue(BosunDatabase(url=os.environ.get("BOSUN_DATABASE_URL") or None).resolved_url)
    return OutboxRelay(outbox, paths, email_channel_from_env(), review=review, **kwargs)


def cli(args, default_routings: Callable[[], dict]) -> int:
    import json
    import signal

    if args.outbox_command == "status":
        routings = {r.workflow: r for r in map(load_routing, args.routing)} if args.routing else default_routings()
        outbox = NotificationOutbox(url=os.environ.get("BOSUN_OUTBOX_DATABASE_URL") or None)
        print(json.dumps(outbox.delivery_figures(sorted(routings)), sort_keys=True))
        return 0
    relay = relay_from_environment(
        args.routing, default_routings, lease_s=args.lease_s, limit=args.limit, budget_s=args.budget_s
    )

    def show(report: PassReport) -> None:
        if not report.idle:
            print(
                json.dumps(
                    {"relay": report.relay, **report.metadata(), "failed_keys": [r["key"] for r in report.failed]}
                ),
                flush=True,
            )

    if args.once:
        show(relay.run_once())
        return 0
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    print(f"outbox relay {relay.holder} draining {relay.workflows}", flush=True)
    try:
        relay.loop(args.interval, stop=lambda: bool(stopping), on_pass=show)
    except KeyboardInterrupt:
        pass
    return 0
