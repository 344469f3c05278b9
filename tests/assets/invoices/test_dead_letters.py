"""Dead letters: recorded after the retry budget, listed, retried through the next batch, dropped."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from assets.invoices.erp import ERPResource
from orchestration.trigger.inbox import TERMINAL_STATES

BOSUN = Path(sys.executable).parent / "bosun"


class PaymentsDown(ERPResource):
    def schedule_payments(self, items):
        raise ConnectionError("payment service unavailable (HTTP 503)")


def bosun(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.run([str(BOSUN), *args], capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout


def test_dead_letters_are_listed_retried_by_the_next_batch_and_dropped(world):
    from orchestration.definitions import build_definitions

    accepted = world.ingest_sample().accepted
    world.run_pending(build_definitions({"erp": PaymentsDown()}))
    db = world.resources["bosun_db"]
    letters = db.dead_letters().list(limit=1000)
    assert len(letters) > 50
    first = letters[0]
    assert first["attempts"] == 3 and "HTTP 503" in first["error"] and first["status"] == "open"
    assert first["first_failed_at"] <= first["last_failed_at"] and first["current_key"] == first["event_key"]

    code, out = bosun("dlq", "list", "--limit", "1000")
    assert code == 0 and {r["id"] for r in json.loads(out)} == {d["id"] for d in letters}
    code, out = bosun("dlq", "drop", str(first["id"]), "--reason", "vendor paid by cheque")
    assert code == 0
    code, out = bosun("dlq", "retry", "--all")
    requeued = json.loads(out)["requeued"]
    assert code == 0 and len(requeued) == len(letters) - 1
    assert all(r["requeued_as"].endswith("#retry1") for r in requeued)
    code, _ = bosun("dlq", "retry", str(first["id"]))
    assert code == 1  # dropped is not open

    # The ERP is back: the re-enqueued events are new inbox rows past the cursor.
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    counts = db.inbox().counts()
    assert set(counts["by_status"]) <= set(TERMINAL_STATES)
    assert counts["by_status"]["retried"] == len(requeued)
    assert counts["received"] == accepted + len(requeued)  # one row per attempt, each terminal
    paid = Counter(p["invoice_id"] for p in world.resources["erp"].live_payments())
    rows = db.inbox().lookup([r["requeued_as"] for r in requeued])
    retried_invoices = {r["entity_key"].split(":")[1] for r in rows.values()}
    # Each retried invoice paid once (a resubmission retried beside its original is stale or rejected).
    assert set(paid) == retried_invoices and max(paid.values()) == 1
    assert db.dead_letters().stats().open == 0
    statuses = Counter(d["status"] for d in db.dead_letters().list(status=None, limit=1000))
    assert statuses == {"retried": len(requeued), "dropped": 1}


def test_a_retry_that_fails_again_reopens_the_letter_with_more_attempts(world):
    from orchestration.definitions import build_definitions

    world.ingest_sample()
    down = build_definitions({"erp": PaymentsDown()})
    world.run_pending(down)
    dl = world.resources["bosun_db"].dead_letters()
    n = len(dl.list(limit=1000))
    dl.retry()
    world.run_pending(down)
    again = dl.list(limit=1000)
    assert len(again) == n
    assert all(d["attempts"] == 6 and d["retries"] == 1 and d["current_key"].endswith("#retry1") for d in again)
    assert all(d["last_failed_at"] > d["first_failed_at"] for d in again)
