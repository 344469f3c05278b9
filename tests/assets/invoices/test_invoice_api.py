"""POST /v1/events?wait=N answers with the outcome once a batch run has processed the events."""

import os
import threading
import time

import httpx
from bosun_testing import BosunServer

from orchestration.trigger.inbox import TERMINAL_STATES


def test_wait_returns_the_outcome_once_the_batch_ran(world, tmp_path):
    from orchestration.api.keys import ApiKeys
    from orchestration.trigger.sample_events import read_events

    db = world.resources["bosun_db"]
    key, _ = ApiKeys(db.resolved_url).create("feeder", ["events:write", "events:read"])
    events = read_events(world.sample / "invoices.jsonl")[:20]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    srv = BosunServer(env, tmp_path / "serve.log")
    try:
        srv.wait_ready()
        answer = {}

        def post():
            answer["r"] = httpx.post(
                srv.url + "/v1/events?wait=30", json=events, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )

        t = threading.Thread(target=post)
        t.start()
        deadline = time.monotonic() + 30
        while db.inbox().counts()["received"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the request has stored its events once the inbox is non-empty
        report = world.run_pending()
        t.join(60)
    finally:
        srv.stop()
    assert report.batches and not report.failed
    r = answer["r"]
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["complete"] is True
    assert {e["status"] for e in body["events"]} <= set(TERMINAL_STATES) - {"rejected"}
    assert len(body["events"]) == body["accepted"] == len({(e["source"], e["id"]) for e in events})
