"""A real HTTP server on a free loopback port that records JSON POSTs (alert webhooks)."""

import json
from http.server import BaseHTTPRequestHandler

from bosun_testing import LoopbackHttpServer


class WebhookReceiver(LoopbackHttpServer):
    """Answers the first `fail_first` POSTs with `fail_status`, the rest with 204; keeps
    every body it was sent. Use as a context manager: the server stops on exit."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503):
        self.received: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.attempts += 1
                if receiver.attempts <= fail_first:
                    self.send_response(fail_status)
                    self.end_headers()
                    return
                receiver.received.append(
                    {"path": self.path, "content_type": self.headers.get("content-type"), "body": json.loads(body)}
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(Handler)
        self.url = f"{self.base_url}/hooks/alerts?token=s3cret"


class OutboxReceiver(LoopbackHttpServer):
    """A vendor's webhook endpoint for outbox messages: keeps every delivery with its headers
    and whether its HMAC signature verified. `script(n, key)` may return (status, headers)
    for the n-th request (1-based) to answer something else than 200; `on_message(key, first)`
    runs after a message is read and before it is answered (a test kills the sender there)."""

    def __init__(self, secret: str | None = None, script=None, on_message=None):
        import hashlib
        import hmac
        import threading

        self.deliveries: list[dict] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                key = self.headers.get("idempotency-key")
                with receiver._lock:
                    receiver.requests += 1
                    n = receiver.requests
                    answer = script(n, key) if script else None
                    verified = None
                    if secret is not None:
                        sig = dict(
                            p.split("=", 1) for p in (self.headers.get("bosun-signature") or "").split(",") if "=" in p
                        )
                        mac = hmac.new(secret.encode(), f"{sig.get('t')}.".encode() + body, hashlib.sha256).hexdigest()
                        verified = hmac.compare_digest(mac, sig.get("v1", ""))
                    first = key not in {d["key"] for d in receiver.deliveries}
                    if answer is None:
                        receiver.deliveries.append(
                            {
                                "key": key,
                                "body": json.loads(body),
                                "verified": verified,
                                "attempt": int(self.headers.get("bosun-delivery-attempt", 0)),
                                "possible_duplicate": self.headers.get("bosun-possible-duplicate"),
                            }
                        )
                if answer is None and on_message:
                    on_message(key, first)
                status, headers = answer or (200, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(Handler)
        self.url = f"{self.base_url}/hooks/outbox"

    def keys(self) -> list[str]:
        with self._lock:
            return [d["key"] for d in self.deliveries]
