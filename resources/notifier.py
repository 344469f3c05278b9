"""Where alerts go: a log line by default, a JSON webhook in production.

An alert is a flat JSON-able dict (kind, title, summary, run_url, ...); the alert sensors
(sensors/alerts.py) build it. The webhook URL often carries a token (Slack, Teams), so it is
an EnvVar and never appears in a log line, an error message or metadata.
"""

from __future__ import annotations

import json
import logging

import dagster as dg
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from resources.env import resolved

log = logging.getLogger("bosun.alerts")


class AlertDeliveryError(RuntimeError):
    """The webhook did not take the alert; the message never contains the URL."""


class _Retryable(AlertDeliveryError):
    pass


class AlertRefused(AlertDeliveryError):
    """The receiver answered with a 4xx other than 429: sending it again will not help."""


class Notifier(dg.ConfigurableResource):
    """The interface: `send(alert)` delivers one alert, or raises AlertRefused (final) or
    AlertDeliveryError (worth trying again later)."""

    def send(self, alert: dict) -> None:
        raise NotImplementedError


class LogNotifier(Notifier):
    """The embedded default: alerts as WARNING lines on the `bosun.alerts` logger."""

    def send(self, alert: dict) -> None:
        log.warning("ALERT %s", json.dumps(alert, sort_keys=True, default=str))


class WebhookNotifier(Notifier):
    """POSTs the alert as JSON. Timeouts, connection errors, 429 and 5xx are retried with
    exponential backoff; another 4xx is final (the receiver refused this alert)."""

    url: str
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.5

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield (name, "**********") if name == "url" else (name, value)

    def send(self, alert: dict) -> None:
        url = resolved(self.url)
        if not url:
            raise AlertDeliveryError("no alert webhook URL (BOSUN_ALERT_WEBHOOK_URL is empty)")
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.attempts)),
            reraise=True,
            wait=wait_exponential(multiplier=self.backoff_s, max=30),
            retry=retry_if_exception_type(_Retryable),
        )
        for attempt in retrying:
            with attempt:
                self._post(url, alert)

    def _post(self, url: str, alert: dict) -> None:
        import httpx  # only a send needs it: the code location and run workers load without it (~5 MiB, 0.1 s)

        try:
            resp = httpx.post(url, json=alert, timeout=self.timeout_s)
        # `from None`: httpx errors name the request URL, which may hold a token.
        except httpx.TimeoutException:
            raise _Retryable(f"alert webhook timed out after {self.timeout_s} s") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"alert webhook unreachable ({type(exc).__name__})") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"alert webhook answered {resp.status_code}")
        if resp.status_code >= 400:
            raise AlertRefused(f"alert webhook refused the alert: {resp.status_code}")
