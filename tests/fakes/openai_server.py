"""A local HTTP server that speaks just enough of OpenAI Chat Completions for tests.

Real sockets rather than mocks, so the openai client's own timeout, retry and
Retry-After handling are exercised exactly as against the real service.

    with FakeOpenAI() as fake:
        fake.script([("malformed", '{"decision": '), ("ok", {"decision": "approve"})])
        llm = OpenAIStructuredLLM(api_key="sk-test", base_url=fake.base_url)

Behaviours, consumed one per request, then the default:
    ("ok", obj_or_callable)        200, content = json.dumps(obj) (callable gets the body)
    ("malformed", text)            200, content = text verbatim
    ("wrong_schema", obj)          200, content = json.dumps(obj)
    ("status", code[, headers])    that status with an OpenAI-style error body
    ("hang", seconds)              wait before answering ("ok" with {}), to trip timeouts
    ("refusal", text)              200, content null and message.refusal = text

`POST /v1/embeddings` always answers (no script): a deterministic 64-dimension bag of
hashed words per input, so texts sharing words are close; requests are kept in
`embedding_requests`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def _bag_of_words(text: str, dims: int = 64) -> list[float]:
    import hashlib
    import re

    v = [0.0] * dims
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % dims] += 1.0
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]


def _token_estimate(text: str) -> int:
    # Roughly four characters a token, like the real tokenizer on English text.
    return max(1, len(text) // 4)


class FakeOpenAI:
    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self._script: deque = deque()
        self._default: tuple = ("status", 500)
        self._lock = threading.Lock()
        # Set on exit so a "hang" in progress ends instead of holding a thread.
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- programming ---------------------------------------------------------------

    def script(self, behaviours: list[tuple]) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def set_default(self, behaviour: tuple) -> None:
        with self._lock:
            self._default = behaviour

    def _next_behaviour(self) -> tuple:
        with self._lock:
            return self._script.popleft() if self._script else self._default

    # -- lifecycle -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use FakeOpenAI as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            # A short poll interval keeps shutdown() (hence every test's teardown) quick.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- responses -----------------------------------------------------------------

    def _completion(self, body: dict, content: str | None, refusal: str | None = None) -> dict:
        prompt_text = json.dumps(body.get("messages", []))
        completion_tokens = _token_estimate(content or refusal or "")
        prompt_tokens = _token_estimate(prompt_text)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def respond(self, behaviour: tuple, body: dict) -> tuple[int, dict, dict]:
        """(status, headers, json body) for one request."""
        kind = behaviour[0]
        if kind == "ok" or kind == "wrong_schema":
            obj = behaviour[1]
            if callable(obj):
                obj = obj(body)
            return 200, {}, self._completion(body, json.dumps(obj))
        if kind == "malformed":
            return 200, {}, self._completion(body, str(behaviour[1]))
        if kind == "refusal":
            return 200, {}, self._completion(body, None, refusal=str(behaviour[1]))
        if kind == "status":
            code = int(behaviour[1])
            headers = dict(behaviour[2]) if len(behaviour) > 2 else {}
            return code, headers, _error_body(code)
        if kind == "hang":
            self._stopping.wait(float(behaviour[1]))
            return 200, {}, self._completion(body, "{}")
        raise ValueError(f"unknown fake behaviour {behaviour!r}")


def _error_body(code: int, message: str | None = None) -> dict:
    err_type, err_code = _ERROR_TYPES.get(code, ("api_error", None))
    return {"error": {"message": message or f"fake error {code}", "type": err_type, "param": None, "code": err_code}}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client's pool expects
    # Headers and body go out as two writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK add ~40 ms to every reply, which dominates benchmarks.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output clean

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout fired); nothing to tell it

    def _embeddings(self, raw: bytes) -> None:
        body = json.loads(raw or b"{}")
        auth = self.headers.get("Authorization") or ""
        self.owner.embedding_requests.append({"body": body, "authorization": auth})
        if not auth.startswith("Bearer "):
            self._send(401, _error_body(401, "missing bearer token"))
            return
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        data = [{"object": "embedding", "index": i, "embedding": _bag_of_words(text)} for i, text in enumerate(inputs)]
        tokens = sum(_token_estimate(t) for t in inputs)
        self._send(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._send(404, _error_body(404, "not found"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") == "/v1/embeddings":
            self._embeddings(raw)
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, _error_body(404, "not found"))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, _error_body(400, "request body is not JSON"))
            return
        auth = self.headers.get("Authorization") or ""
        record = {
            "body": body,
            "authorization": auth,
            "retry_count": self.headers.get("x-stainless-retry-count"),
            "time": time.monotonic(),
            "usage": None,  # filled in below when the reply carries usage
        }
        self.owner.requests.append(record)
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            self._send(401, _error_body(401, "missing bearer token"))
            return
        status, headers, payload = self.owner.respond(self.owner._next_behaviour(), body)
        record["usage"] = payload.get("usage")
        self._send(status, payload, headers)
