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
                receiver.received.append({"path": self.path, "content_type": self.headers.get("content-type"),
                                          "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(Handler)
        self.url = f"{self.base_url}/hooks/alerts?token=s3cret"
