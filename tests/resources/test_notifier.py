"""The notifier resource: the log by default, a JSON webhook with timeout and retries."""

import logging

import dagster as dg
import pytest
from bosun_testing import free_port
from webhook_receiver import WebhookReceiver

from resources.notifier import AlertDeliveryError, AlertRefused, LogNotifier, WebhookNotifier

ALERT = {"kind": "run_failure", "title": "Run of x failed", "run_url": "http://ui/runs/abc"}


def test_default_is_the_log_and_the_webhook_comes_from_the_environment(monkeypatch, caplog):
    from resources.defaults import default_resources

    monkeypatch.delenv("BOSUN_ALERT_WEBHOOK_URL", raising=False)
    notifier = default_resources()["notifier"]
    assert isinstance(notifier, LogNotifier)
    with caplog.at_level(logging.WARNING, logger="bosun.alerts"):
        notifier.send(ALERT)
    assert "Run of x failed" in caplog.text and "http://ui/runs/abc" in caplog.text

    monkeypatch.setenv("BOSUN_ALERT_WEBHOOK_URL", "https://hooks.example/T0/s3cret")
    notifier = default_resources()["notifier"]
    assert isinstance(notifier, WebhookNotifier)
    assert isinstance(notifier.url, dg.EnvVar)  # resolved at run time, never written into config
    assert "s3cret" not in repr(notifier)


def test_webhook_posts_json_and_retries_a_5xx():
    with WebhookReceiver(fail_first=2) as hook:
        WebhookNotifier(url=hook.url, backoff_s=0.01).send(ALERT)
    assert hook.attempts == 3
    assert [r["body"] for r in hook.received] == [ALERT]
    assert hook.received[0]["content_type"] == "application/json"
    assert hook.received[0]["path"] == "/hooks/alerts?token=s3cret"


def test_webhook_gives_up_without_naming_the_url():
    with WebhookReceiver(fail_first=99) as hook:
        with pytest.raises(AlertDeliveryError) as err:
            WebhookNotifier(url=hook.url, attempts=2, backoff_s=0.01).send(ALERT)
    assert hook.attempts == 2 and not hook.received
    assert "503" in str(err.value) and "s3cret" not in str(err.value)

    with pytest.raises(AlertDeliveryError) as err:  # nobody listens there
        WebhookNotifier(
            url=f"http://127.0.0.1:{free_port()}/x?token=s3cret", attempts=2, backoff_s=0.01, timeout_s=1
        ).send(ALERT)
    assert "unreachable" in str(err.value) and "s3cret" not in str(err.value)
    assert err.value.__cause__ is None


def test_a_refused_alert_is_not_retried():
    with WebhookReceiver(fail_first=99, fail_status=400) as hook:
        with pytest.raises(AlertRefused):
            WebhookNotifier(url=hook.url, attempts=3, backoff_s=0.01).send(ALERT)
    assert hook.attempts == 1
