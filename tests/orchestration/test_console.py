"""The reviewer console's sessions and answers over HTTP, with a workflow that is not invoices
(support tickets, whose answers execute nothing), against a real uvicorn on a loopback port:
who may sign in, the cookie's flags, CSRF on every POST, escaping, revocation, sign-out, and
that an answer goes through the review service once. The browser test with a payment is
tests/assets/invoices/test_review_console.py."""

import re
import threading
import time

import httpx
import pytest
import uvicorn
from bosun_testing import free_port
from test_reviews import TICKETS, _world

from orchestration.api.app import create_app
from orchestration.api.keys import ApiKeys
from orchestration.audit.chain import AuditLog
from orchestration.decision.feedback import FeedbackStore
from orchestration.review.answers import ReviewService
from orchestration.review.queue import ReviewQueue
from orchestration.trigger.envelope import PayloadRegistry


class ThreadedUvicorn:
    """The app under a real uvicorn on a free loopback port; stopped (and joined) on exit."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def console(tmp_path, monkeypatch):
    monkeypatch.setenv("BOSUN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BOSUN_CONSOLE_SECRET", raising=False)
    url = f"sqlite:///{tmp_path / 'bosun.db'}"
    _world(url)
    # A reason a source could have put anything into: the page must show it, not run it.
    ReviewQueue(url).submit(
        "tickets",
        [
            {
                "key": "desk:t-9",
                "entity_key": "c-9",
                "confidence": 0.3,
                "reason": "<script>alert('x')</script> in the subject",
                "proposal": {"decision": "close"},
            }
        ],
        "b1",
    )
    service = ReviewService(url, {}, {"tickets": TICKETS}, "test")
    keys = ApiKeys(url)
    made = {
        name: keys.create(name, scopes, rate_per_s=1000, burst=1000)
        for name, scopes in [
            ("Ada Lovelace", ["reviews:write"]),
            ("Grace Hopper", ["reviews:write"]),
            ("auditor", ["reviews:read"]),
            ("feeder", ["events:write", "events:read"]),
        ]
    }
    with ThreadedUvicorn(create_app(url, PayloadRegistry(), metrics=False, reviews=service)) as srv:
        yield srv, url, made


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _sign_in(client: httpx.Client, key: str) -> httpx.Response:
    token = _csrf(client.get("/console/sign-in").text)
    return client.post("/console/sign-in", data={"api_key": key, "csrf": token})


def test_only_a_review_scope_signs_in_with_a_strict_http_only_cookie(console, tmp_path):
    srv, url, keys = console
    with httpx.Client(base_url=srv.url) as client:
        assert client.get("/").headers["location"] == "console/"
        first = client.get("/console/")
        assert first.status_code == 303 and first.headers["location"] == "/console/sign-in"
        page = client.get("/console/sign-in")
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        assert "secure" not in cookie  # BOSUN_CONSOLE_SECURE_COOKIE=1 adds it behind TLS
        assert "script-src" not in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        # The generated secret stays in BOSUN_HOME, readable by its owner only.
        assert (tmp_path / "home" / "console_secret").stat().st_mode & 0o077 == 0

        assert client.post("/console/sign-in", data={"api_key": keys["auditor"][0]}).status_code == 403  # no CSRF
        refused = _sign_in(client, keys["feeder"][0])
        assert refused.status_code == 403 and "no review scope" in refused.text
        assert _sign_in(client, "bsn_nope_nope").status_code == 401
        assert client.get("/console/").status_code == 303  # still signed out

        signed = _sign_in(client, keys["auditor"][0])
        assert signed.status_code == 303 and signed.headers["location"] == "/console/"
        queue = client.get("/console/")
        assert queue.status_code == 200 and "Signed in as <strong>auditor</strong> (read only)" in queue.text
        assert queue.text.count('href="/console/reviews/') == 3 and "confidence 0.40 below 0.75" in queue.text
        assert "<script>alert" not in queue.text and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in queue.text
        item = ReviewService(url, {}, {"tickets": TICKETS}).list()[0]
        shown = client.get(f"/console/reviews/{item['id']}")
        assert shown.status_code == 200 and 'id="approve"' not in shown.text  # read only: no answer forms
        denied = client.post(f"/console/reviews/{item['id']}/approve", data={"csrf": _csrf(shown.text)})
        assert denied.status_code == 403 and "lacks reviews:write" in denied.text
        assert ReviewQueue(url).get(item["id"])["status"] == "pending"

        # A cookie that was tampered with is no session.
        jar = httpx.Cookies()
        value = client.cookies.get("bosun_console")
        jar.set("bosun_console", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"), path="/console")
        with httpx.Client(base_url=srv.url, cookies=jar) as forged:
            assert forged.get("/console/").status_code == 303

        out = client.post("/console/sign-out", data={"csrf": _csrf(shown.text)})
        assert out.status_code == 303 and client.get("/console/").status_code == 303


def test_an_answer_goes_through_the_review_service_once(console):
    srv, url, keys = console
    item = ReviewService(url, {}, {"tickets": TICKETS}).list()[0]
    path = f"/console/reviews/{item['id']}"
    with httpx.Client(base_url=srv.url) as ada, httpx.Client(base_url=srv.url) as grace:
        assert _sign_in(ada, keys["Ada Lovelace"][0]).status_code == 303
        assert _sign_in(grace, keys["Grace Hopper"][0]).status_code == 303
        page, other = ada.get(path), grace.get(path)
        assert page.status_code == 200 and 'id="approve"' in page.text and "What approving executes" in page.text
        assert "Nothing: an approval records the answer and closes the event as <strong>close</strong>" in page.text
        assert "confidence 0.40 below 0.75" in page.text and "model_probability" in page.text

        # Another session's token, or none, is refused and decides nothing.
        assert ada.post(path + "/approve", data={"note": "x"}).status_code == 403
        assert ada.post(path + "/approve", data={"csrf": _csrf(other.text)}).status_code == 403
        assert ReviewQueue(url).get(item["id"])["status"] == "pending"

        done = ada.post(path + "/approve", data={"csrf": _csrf(page.text), "note": "known customer"})
        assert done.status_code == 303 and done.headers["location"] == path
        after = ada.get(path)
        assert "Approved by Ada Lovelace as &#39;close&#39;." in after.text and 'id="approve"' not in after.text
        twice = grace.post(path + "/approve", data={"csrf": _csrf(other.text)})
        assert twice.status_code == 409 and "already approved by Ada Lovelace" in twice.text

        [fb] = [f for f in FeedbackStore(url).list("tickets") if f["subject"] == item["event"]]
        assert (fb["kind"], fb["reviewer"], fb["note"]) == ("approve", "Ada Lovelace", "known customer")
        [review] = [r["record"] for r in AuditLog(url).records_for(item["event"]) if r["kind"] == "review"]
        assert review["via"] == f"console:{keys['Ada Lovelace'][1].key_id}"

        # A rejection needs a reason; a correction records feedback only.
        second = ReviewService(url, {}, {"tickets": TICKETS}).list()[0]
        token = _csrf(ada.get(f"/console/reviews/{second['id']}").text)
        unsaid = ada.post(f"/console/reviews/{second['id']}/reject", data={"csrf": token, "note": ""})
        assert unsaid.status_code == 422 and "needs a reason" in unsaid.text
        fixed = ada.post(f"/console/reviews/{second['id']}/correct", data={"csrf": token, "label": "spam"})
        assert fixed.status_code == 303 and ReviewQueue(url).get(second["id"])["status"] == "pending"
        assert FeedbackStore(url).labels("tickets")[second["event"]] == "spam"

        # Revoking the key ends its sessions at once.
        ApiKeys(url).revoke(keys["Grace Hopper"][1].key_id)
        assert grace.get(path).status_code == 303
