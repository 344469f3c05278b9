"""A real HTTP server on a free loopback port that records JSON POSTs (alert webhooks)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts?token=s3cret"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
