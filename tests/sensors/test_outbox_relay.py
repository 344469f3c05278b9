"""The outbox relay against a real SMTP server (aiosmtpd, started here), a real webhook
receiver on loopback, SQLite and Postgres: every message once with its key, retries that
honour Retry-After, failures and late bounces the checks name and the review queue gets,
retractions and corrections, content refused for personal data, two relays at once, and a
relay process SIGKILLed mid-send again and again."""

from __future__ import annotations

import email
import json
import mailbox
import os
import signal
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import dagster as dg
import pytest
from smtp_server import SmtpServer
from webhook_receiver import OutboxReceiver

from assets.invoices.payment_saga import payment_notice
from assets.invoices.workflow import NOTIFICATION_ROUTING
from orchestration.core import clock
from orchestration.review.queue import ReviewQueue
from resources.channels import EmailChannel, load_routing, message_id_for, utc
from resources.database import BosunDatabase
from resources.outbox import NotificationOutbox, correction_key
from sensors.outbox_relay import BOUNCE_CHECK, TICK_CHECK, OutboxRelay, _check_verdicts, build_outbox_relay_sensor

TOY = {
    "workflow": "toy",
    "recipients": {
        "partner": {
            "channel": "webhook",
            "url_env": "TOY_PARTNER_WEBHOOK_URL",
            "secret_env": "TOY_PARTNER_SECRET",
            "fields": {"order_id": "id", "note": "text"},
            "timeout_s": 5,
            "attempts": 3,
            "backoff_s": 0.05,
            "retry_after_s": 0.2,
            "templates": {
                "notice": {"subject": "Order $order_id", "text": "Order $order_id: $note"},
                "correction": {"subject": "Correction $order_id", "text": "Disregard $retracts"},
            },
        },
        "customer": {
            "channel": "email",
            "address": "$recipient@customers.example.com",
            "fields": {"order_id": "id", "note": "text"},
            "templates": {
                "notice": {"subject": "Order $order_id", "text": "Order $order_id: $note"},
                "correction": {"subject": "Correction $order_id", "text": "Disregard $retracts"},
            },
        },
    },
}


def _notice(key: str, recipient_type: str = "partner", recipient: str = "P-1", note: str = "ready") -> dict:
    return {
        "key": key,
        "workflow": "toy",
        "recipient_type": recipient_type,
        "recipient": recipient,
        "entity": f"order-{key}",
        "subject": "unused",
        "body": {"order_id": f"O-{key}", "note": note},
    }


@pytest.fixture
def toy_routing(tmp_path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(json.dumps(TOY))  # JSON is YAML
    return path


@pytest.fixture
def sqlite_urls(tmp_path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'outbox.db'}", f"sqlite:///{tmp_path / 'bosun.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_urls(request, sqlite_urls) -> tuple[str, str]:
    if request.param == "sqlite":
        return sqlite_urls
    url = request.getfixturevalue("pg_url")
    return url, url


@pytest.fixture
def receiver_env(monkeypatch):
    def start(**kw) -> OutboxReceiver:
        rec = OutboxReceiver(secret="whsec-test", **kw)
        monkeypatch.setenv("TOY_PARTNER_WEBHOOK_URL", rec.url)
        monkeypatch.setenv("TOY_PARTNER_SECRET", "whsec-test")
        return rec

    return start


def _relay(urls, routing: Path, email_channel: EmailChannel | None = None, tmp: Path | None = None, **kw):
    outbox_url, bosun_url = urls
    routings = {"toy": load_routing(routing)}
    return OutboxRelay(
        NotificationOutbox(url=outbox_url),
        routings,
        email_channel or EmailChannel(),
        review=ReviewQueue(bosun_url),
        bounces=(tmp or Path("/nonexistent")) / "bounces",
        **kw,
    )


def test_every_notice_of_a_batch_arrives_once_with_its_key_over_smtp(sqlite_urls, tmp_path):
    """The invoice workflow's own routing and templates, through a real SMTP server."""
    items = [
        {
            "key": f"portal:e-{i}",
            "vendor_id": f"V{i:04d}",
            "invoice_id": f"INV-{i}",
            "po_number": f"PO-{i}",
            "amount": f"{100 + i}.50",
            "currency": "EUR",
            "due_on": "2026-12-01",
            "saga_id": f"portal:e-{i}",
        }
        for i in range(12)
    ]
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([payment_notice(it) for it in items])
    with SmtpServer() as smtp:
        channel = EmailChannel(host="127.0.0.1", port=smtp.port, from_address="ap@bosun.example")
        relay = OutboxRelay(
            outbox,
            {"invoices": load_routing(NOTIFICATION_ROUTING)},
            channel,
            review=ReviewQueue(sqlite_urls[1]),
            bounces=tmp_path / "bounces",
        )
        report = relay.run_once()
        again = relay.run_once()
    assert report.outcomes["sent"] == 12 and report.failed == [] and again.claimed == 0
    keys = [m["X-Bosun-Idempotency-Key"] for m in smtp.messages]
    assert sorted(keys) == sorted(it["key"] for it in items)  # each exactly once
    first = next(m for m in smtp.messages if m["X-Bosun-Idempotency-Key"] == "portal:e-3")
    assert first["Message-ID"] == message_id_for("portal:e-3", "bosun.local")
    assert first["To"] == "accounts-payable+V0003@vendors.example.com"
    assert first["Subject"] == "Payment scheduled for invoice INV-3"
    text = first.get_payload(decode=True).decode()
    assert "103.50 EUR" in text and "schedule_payment:portal:e-3" in text
    assert outbox.delivery_figures(["invoices"]) == {"sent": 12}
    [attempt] = outbox.attempts_for("portal:e-3")
    assert attempt["outcome"] == "sent" and attempt["finished_at"] is not None and attempt["channel"] == "email"
    assert report.metadata()["messages.sent"] == 12 and report.metadata()["latency_queued_to_sent_p95_s"] >= 0


def test_smtp_settings_from_the_environment_with_starttls_and_login(sqlite_urls, toy_routing, tmp_path, monkeypatch):
    """As the CLI relay runs it: the channel built from BOSUN_SMTP_* (EnvVars, unresolved
    outside a run), STARTTLS verified against the server's own CA, then AUTH LOGIN."""
    import ssl

    from aiosmtpd.smtp import AuthResult

    from resources.channels import email_channel_from_env

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(cert), str(key))
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.login == b"relay" and auth_data.password == b"s3cret")

    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("t-1", "customer", "anna")])
    with SmtpServer(tls_context=tls, require_starttls=True, auth_required=True, authenticator=authenticator) as smtp:
        for name, value in {
            "BOSUN_SMTP_HOST": "127.0.0.1",
            "BOSUN_SMTP_PORT": str(smtp.port),
            "BOSUN_SMTP_TLS": "starttls",
            "BOSUN_SMTP_CA_FILE": str(cert),
            "BOSUN_SMTP_USERNAME": "relay",
            "BOSUN_SMTP_PASSWORD": "s3cret",
            "BOSUN_SMTP_FROM": "ap@bosun.example",
        }.items():
            monkeypatch.setenv(name, value)
        channel = email_channel_from_env()
        assert "s3cret" not in repr(channel)
        report = _relay(sqlite_urls, toy_routing, channel, tmp_path).run_once()
    assert report.outcomes["sent"] == 1, report.failed or outbox.messages(["t-1"])
    assert [m["From"] for m in smtp.messages] == ["ap@bosun.example"]
    assert logins and logins[0][1:] == (b"relay", b"s3cret")


def test_an_smtp_rejection_fails_the_message_for_good(sqlite_urls, toy_routing, tmp_path):
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("c-1", "customer", "refuse"), _notice("c-2", "customer", "anna")])
    with SmtpServer() as smtp:
        report = _relay(sqlite_urls, toy_routing, EmailChannel(host="127.0.0.1", port=smtp.port), tmp_path).run_once()
    assert [m["X-Bosun-Idempotency-Key"] for m in smtp.messages] == ["c-2"]
    assert [f["key"] for f in report.failed] == ["c-1"] and "550" in report.failed[0]["detail"]
    assert outbox.messages(["c-1"])["c-1"]["delivery"] == "failed"


def test_a_receiver_answering_5xx_then_200_gets_the_message_once_honouring_retry_after(
    sqlite_urls, toy_routing, receiver_env
):
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("n-1")])
    script = lambda n, key: (503, {"Retry-After": "1"}) if n <= 2 else None  # noqa: E731
    with receiver_env(script=script) as rec:
        started = time.monotonic()
        report = _relay(sqlite_urls, toy_routing).run_once()
        took = time.monotonic() - started
    assert rec.requests == 3 and rec.keys() == ["n-1"] and rec.deliveries[0]["verified"] is True
    assert report.outcomes["delivered"] == 1 and took >= 2.0  # waited the receiver's Retry-After twice
    assert [a["outcome"] for a in outbox.attempts_for("n-1")] == ["delivered"]


def test_a_long_retry_after_is_honoured_by_a_later_pass(sqlite_urls, toy_routing, receiver_env):
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("w-1")])
    with receiver_env(script=lambda n, key: (429, {"Retry-After": "120"})) as rec:
        relay = _relay(sqlite_urls, toy_routing)
        first = relay.run_once()
        second = relay.run_once()
    assert rec.requests == 1 and first.outcomes["retrying"] == 1 and second.claimed == 0
    msg = outbox.messages(["w-1"])["w-1"]
    assert msg["delivery"] == "retrying" and "429" in msg["delivery_detail"]
    wait = (utc(msg["next_attempt_at"]) - clock.now()).total_seconds()
    assert 100 < wait <= 120


def test_a_retracted_notice_is_never_sent_and_one_sent_gets_one_correction(
    db_urls, toy_routing, receiver_env, tmp_path
):
    outbox = NotificationOutbox(url=db_urls[0])
    outbox.queue_notifications([_notice("r-1"), _notice("r-2")])
    outbox.retract_notifications([_notice("r-1")])  # still queued: cancelled, never leaves
    with receiver_env() as rec:
        relay = _relay(db_urls, toy_routing, tmp=tmp_path)
        relay.run_once()
        outbox.retract_notifications([_notice("r-2")])  # already delivered: a correction follows
        outbox.retract_notifications([_notice("r-2")])  # a replayed compensation adds nothing
        relay.run_once()
        relay.run_once()
    assert rec.keys() == ["r-2", correction_key("r-2")]
    correction = rec.deliveries[1]["body"]
    assert correction["kind"] == "correction" and correction["corrects"] == "r-2"
    assert correction["text"] == "Disregard r-2" and rec.deliveries[1]["verified"] is True
    states = {
        k: (m["status"], m["delivery"]) for k, m in outbox.messages(["r-1", "r-2", correction_key("r-2")]).items()
    }
    assert states == {
        "r-1": ("cancelled", None),
        "r-2": ("retracted", "delivered"),
        correction_key("r-2"): ("dispatched", "delivered"),
    }


def test_no_correction_follows_a_message_the_receiver_refused(sqlite_urls, toy_routing, receiver_env):
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("z-1")])
    with receiver_env(script=lambda n, key: (410, {})) as rec:
        relay = _relay(sqlite_urls, toy_routing)
        relay.run_once()
        outbox.retract_notifications([_notice("z-1")])  # its compensation after the refusal
        second = relay.run_once()
    assert rec.requests == 1 and second.outcomes["skipped"] == 1
    assert outbox.messages([correction_key("z-1")])[correction_key("z-1")]["status"] == "cancelled"


def test_a_message_claimed_but_not_yet_sent_is_cancelled_by_a_retraction(sqlite_urls):
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("x-1")])
    [claimed] = outbox.claim("relay-a", ["toy"], lease_s=30)
    outbox.retract_notifications([_notice("x-1")])
    assert outbox.begin_attempt(claimed, "relay-a", "webhook") is None  # the relay does not send it
    assert outbox.messages(["x-1"])["x-1"]["status"] == "cancelled"
    assert outbox.messages([correction_key("x-1")]) == {}  # nothing left, nothing to correct


def test_personal_data_the_routing_does_not_allow_is_refused_never_sent(sqlite_urls, toy_routing, receiver_env):
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications(
        [
            _notice("p-1", note="pay to DE89 3704 0044 0532 0130 00 please"),
            _notice("p-2", note="call anna@example.org"),
            _notice("p-3"),
        ]
    )
    with receiver_env() as rec:
        report = _relay(sqlite_urls, toy_routing).run_once()
    assert rec.keys() == ["p-3"]
    refused = {f["key"]: f["detail"] for f in report.failed}
    assert set(refused) == {"p-1", "p-2"} and "iban" in refused["p-1"] and "email" in refused["p-2"]
    assert outbox.messages(["p-1"])["p-1"]["delivery"] == "failed"
    assert [a["outcome"] for a in outbox.attempts_for("p-1")] == ["refused"]


def test_a_receiver_that_refuses_for_good_fails_the_message_the_sensor_check_names_it_and_it_is_escalated(
    sqlite_urls, toy_routing, receiver_env, tmp_path
):
    outbox_url, bosun_url = sqlite_urls
    outbox = NotificationOutbox(url=outbox_url)
    outbox.queue_notifications([_notice("f-1"), _notice("f-2")])
    routing = load_routing(toy_routing)

    def make_relay(outbox_res, email_res, bosun_db):
        return OutboxRelay(
            outbox_res, {"toy": routing}, email_res, review=bosun_db.review_queue(), bounces=tmp_path / "bounces"
        )

    sensor = build_outbox_relay_sensor(make_relay)
    script = lambda n, key: (422, {}) if key == "f-1" else None  # noqa: E731
    with receiver_env(script=script) as rec, dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(
            instance=instance,
            resources={
                "outbox": NotificationOutbox(url=outbox_url),
                "outbox_email": EmailChannel(),
                "bosun_db": BosunDatabase(url=bosun_url),
            },
        )
        result = sensor(ctx)
        idle = sensor(
            dg.build_sensor_context(
                instance=instance,
                resources={
                    "outbox": NotificationOutbox(url=outbox_url),
                    "outbox_email": EmailChannel(),
                    "bosun_db": BosunDatabase(url=bosun_url),
                },
            )
        )
    assert rec.keys() == ["f-2"] and rec.requests == 2  # a 422 is final: not retried
    assert isinstance(idle, dg.SkipReason)
    events = {getattr(e, "check_name", "materialization"): e for e in result.asset_events}
    assert events[TICK_CHECK].passed is False and events[BOUNCE_CHECK].passed is True
    assert events[TICK_CHECK].metadata["failed_keys"].value == ["f-1"]
    meta = events["materialization"].metadata
    assert meta["messages.delivered"].value == 1 and meta["messages.failed"].value == 1
    assert meta["total.failed"].value == 1 and meta["messages.escalated"].value == 1
    [item] = ReviewQueue(bosun_url).items(workflow="toy")
    assert item["idempotency_key"] == "outbox:f-1" and item["proposal"]["kind"] == "undelivered_message"
    assert "HTTP 422" in item["reason"]


def _bounce_report(original: email.message.Message) -> EmailMessage:
    """An RFC 3464 delivery status notification quoting the original's headers."""
    report = EmailMessage()
    report["From"] = "MAILER-DAEMON@customers.example.com"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.set_content("Your message could not be delivered.")
    report.make_mixed()
    report.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    status = email.message.Message()
    status.set_type("message/delivery-status")
    per_msg, per_rcpt = email.message.Message(), email.message.Message()
    per_msg["Reporting-MTA"] = "dns; mx.customers.example.com"
    per_rcpt["Final-Recipient"] = f"rfc822; {original['To']}"
    per_rcpt["Action"] = "failed"
    per_rcpt["Status"] = "5.1.1"
    per_rcpt["Diagnostic-Code"] = "smtp; 550 5.1.1 mailbox unknown"
    status.set_payload([per_msg, per_rcpt])
    report.attach(status)
    headers = email.message.Message()
    headers.set_type("text/rfc822-headers")
    headers.set_payload("".join(f"{k}: {v}\n" for k, v in original.items()))
    report.attach(headers)
    return report


def test_a_late_bounce_marks_the_message_bounced_and_the_workflow_escalates_it(sqlite_urls, toy_routing, tmp_path):
    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("b-1", "customer", "gone"), _notice("b-2", "customer", "anna")])
    sink = tmp_path / "sink"
    relay = _relay(sqlite_urls, toy_routing, EmailChannel(sink_dir=str(sink)), tmp_path)
    first = relay.run_once()
    assert first.outcomes["sent"] == 2 and first.bounced == []
    sent = {m["X-Bosun-Idempotency-Key"]: m for m in mailbox.Maildir(str(sink), create=False)}
    # Later, the receiving server's bounce lands in the bounce mailbox the relay reads.
    mailbox.Maildir(str(tmp_path / "bounces"), create=True).add(_bounce_report(sent["b-1"]))
    late = relay.run_once()
    assert [m["idempotency_key"] for m in late.bounced] == ["b-1"] and late.escalated == 1
    assert "5.1.1" in late.bounced[0]["delivery_detail"]
    verdicts = {name: passed for name, passed, *_ in _check_verdicts(late)}
    assert verdicts == {TICK_CHECK: True, BOUNCE_CHECK: False}
    assert {k: m["delivery"] for k, m in outbox.messages(["b-1", "b-2"]).items()} == {"b-1": "bounced", "b-2": "sent"}
    [item] = ReviewQueue(sqlite_urls[1]).items(workflow="toy")
    assert item["idempotency_key"] == "outbox:b-1" and item["proposal"]["delivery"] == "bounced"
    assert relay.run_once().idle  # the report was consumed; nothing escalated twice
    assert len(ReviewQueue(sqlite_urls[1]).items(workflow="toy")) == 1


def test_two_relays_at_once_never_send_a_message_twice(db_urls, toy_routing, receiver_env, tmp_path):
    outbox = NotificationOutbox(url=db_urls[0])
    keys = [f"c-{i:03d}" for i in range(60)]
    outbox.queue_notifications([_notice(k) for k in keys])
    with receiver_env() as rec:
        relays = [_relay(db_urls, toy_routing, tmp=tmp_path, limit=7, holder=f"relay-{i}") for i in range(2)]
        counts = {r.holder: 0 for r in relays}
        largest_claim: list[int] = []
        go = threading.Barrier(2)

        def drain(relay):
            go.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                report = relay.run_once()
                counts[relay.holder] += report.outcomes["delivered"]
                largest_claim.append(report.claimed)
                if report.claimed == 0:
                    return

        threads = [threading.Thread(target=drain, args=(r,)) for r in relays]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
    assert sorted(rec.keys()) == keys  # every message once
    assert all(n > 0 for n in counts.values()), counts  # both relays did send
    assert max(largest_claim) == 7  # a claim takes at most its limit
    assert outbox.delivery_figures(["toy"]) == {"delivered": 60}


def _relay_process(env: dict, routing: Path, log) -> subprocess.Popen:
    bosun = Path(sys.executable).parent / "bosun"
    return subprocess.Popen(
        [
            str(bosun),
            "outbox",
            "relay",
            "--loop",
            "--routing",
            str(routing),
            "--interval",
            "0.1",
            "--lease-s",
            "1.5",
            "--limit",
            "5",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_a_relay_sigkilled_mid_send_again_and_again_delivers_each_message_once_or_twice_with_its_key(
    sqlite_urls, toy_routing, receiver_env, tmp_path
):
    """The receiver has read a message and not answered yet when it SIGKILLs the relay
    process (by its pid): the relay cannot know whether it arrived. Every third new message."""
    outbox = NotificationOutbox(url=sqlite_urls[0])
    keys = [f"k-{i:02d}" for i in range(7)]
    outbox.queue_notifications([_notice(k) for k in keys])
    current: dict = {}
    kills: list[str] = []
    new_seen = [0]

    def kill_mid_send(key: str, first: bool) -> None:
        if first:
            new_seen[0] += 1
            if new_seen[0] % 3 == 0 and current.get("proc") is not None:
                kills.append(key)
                os.kill(current["proc"].pid, signal.SIGKILL)

    env = {
        **os.environ,
        "BOSUN_OUTBOX_DATABASE_URL": sqlite_urls[0],
        "BOSUN_DATABASE_URL": sqlite_urls[1],
        "BOSUN_HOME": str(tmp_path / "home"),
        "BOSUN_OUTBOX_BOUNCE_MAILDIR": str(tmp_path / "bounces"),
    }
    log = open(tmp_path / "relay.log", "w")
    try:
        with receiver_env(on_message=kill_mid_send) as rec:
            env["TOY_PARTNER_WEBHOOK_URL"], env["TOY_PARTNER_SECRET"] = rec.url, "whsec-test"
            deadline = time.monotonic() + 120
            starts = 0
            while time.monotonic() < deadline:
                if outbox.delivery_figures(["toy"]) == {"delivered": len(keys)}:
                    break
                proc = current.get("proc")
                if proc is None or proc.poll() is not None:
                    if proc is not None:
                        assert proc.returncode == -signal.SIGKILL, open(tmp_path / "relay.log").read()[-2000:]
                    current["proc"] = _relay_process(env, toy_routing, log)
                    starts += 1
                time.sleep(0.1)
            received = rec.deliveries[:]
    finally:
        proc = current.get("proc")
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        log.close()
    assert outbox.delivery_figures(["toy"]) == {"delivered": len(keys)}, open(tmp_path / "relay.log").read()[-3000:]
    assert len(kills) == 2 and starts == len(kills) + 1
    per_key = {k: [d for d in received if d["key"] == k] for k in keys}
    assert all(1 <= len(v) <= 2 for v in per_key.values()), {k: len(v) for k, v in per_key.items()}
    for key in kills:  # the message in flight at each kill came again, with the same key, marked
        copies = per_key[key]
        assert len(copies) == 2 and copies[1]["possible_duplicate"] == "yes"
        assert copies[1]["attempt"] > copies[0]["attempt"] and copies[1]["body"] == copies[0]["body"]
    assert all(d["verified"] for d in received)


def test_a_message_whose_send_was_interrupted_twice_is_failed_not_sent_a_third_time(
    sqlite_urls, toy_routing, receiver_env, tmp_path
):
    """Each interrupted send may have reached the receiver: a third would break 'at most twice'."""
    from datetime import timedelta

    outbox = NotificationOutbox(url=sqlite_urls[0])
    outbox.queue_notifications([_notice("d-1")])
    start = clock.now()
    for n in range(2):  # a relay claims, logs its attempt, and dies before recording
        with clock.frozen(start + timedelta(seconds=10 * n)):
            [held] = outbox.claim(f"dead-{n}", ["toy"], lease_s=5)
            assert held.in_doubt == n
            assert outbox.begin_attempt(held, f"dead-{n}", "webhook") is not None
    with receiver_env() as rec, clock.frozen(start + timedelta(seconds=30)):
        report = _relay(sqlite_urls, toy_routing, tmp=tmp_path).run_once()
    assert rec.requests == 0 and [f["key"] for f in report.failed] == ["d-1"]
    assert "in doubt" in report.failed[0]["detail"] and report.escalated == 1
    assert outbox.messages(["d-1"])["d-1"]["delivery"] == "failed"


def test_materializing_outbox_deliveries_runs_a_pass_with_its_checks(sqlite_urls, toy_routing, receiver_env, tmp_path):
    from sensors.outbox_relay import build_outbox_deliveries_asset

    outbox_url, bosun_url = sqlite_urls
    NotificationOutbox(url=outbox_url).queue_notifications([_notice("m-1"), _notice("m-2")])
    routing = load_routing(toy_routing)
    asset = build_outbox_deliveries_asset(
        lambda o, e, db: OutboxRelay(o, {"toy": routing}, e, review=db.review_queue(), bounces=tmp_path / "bounces")
    )
    with receiver_env() as rec, dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            resources={
                "outbox": NotificationOutbox(url=outbox_url),
                "outbox_email": EmailChannel(),
                "bosun_db": BosunDatabase(url=bosun_url),
            },
        )
    assert sorted(rec.keys()) == ["m-1", "m-2"]
    meta = result.asset_materializations_for_node("outbox_deliveries")[0].metadata
    assert meta["messages.delivered"].value == 2 and meta["total.delivered"].value == 2
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        TICK_CHECK: True,
        BOUNCE_CHECK: True,
    }
