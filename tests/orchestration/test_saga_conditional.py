"""Conditional saga steps (`PlanStep(..., when=...)`) on the durable executor, against a real
database: a step whose condition the saga's logged params do not meet is logged `skipped`,
never called, verified or compensated; a process killed mid-saga and resumed by another
decides the same from the saga log alone; the preview shows the skip."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bosun_testing import stop_process_group

from orchestration.action.saga_executor import PlanStep, SagaPlan, When
from orchestration.action.saga_log import ACTIVE, SagaLog
from orchestration.review.queue import ReviewQueue
from resources.fault_injection import FaultPlan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import ticket_saga_worker as worker  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _called(desk, method: str) -> set[str]:
    """Every idempotency key the desk saw in a call of `method` (refused ones included)."""
    return {k for name, _, keys in desk.calls if name == method for k in keys}


def _assert_settled_by_the_flag(url: str, items: list[dict], desk_rows: dict) -> None:
    log = SagaLog(url).load([it["key"] for it in items])
    for it in items:
        k, steps = it["key"], log[it["key"]]["steps"]
        assert log[k]["status"] == "done", (k, log[k])
        assert steps["assign"] == ("done", None)
        if it["send_reply"]:
            assert steps["send_reply"] == ("done", None)
        else:
            assert steps["send_reply"] == ("skipped", "condition not met: send_reply")
    # Each effect exactly once at the desk, and no reply for a ticket that needed none.
    assert desk_rows == {
        **{f"assign:{it['key']}": (True, 1) for it in items},
        **{f"send_reply:{it['key']}": (True, 1) for it in items if it["send_reply"]},
    }
    assert not SagaLog(url).unfinished("tickets")


# ---- (a) the flag decides ------------------------------------------------------------------


def test_only_sagas_whose_params_say_so_run_the_conditional_step(db_url):
    items = worker.tickets(6)
    ex, desk = worker.executor(db_url)
    out = ex.run(items, "b1")
    assert sorted(out.done) == [it["key"] for it in items] and not out.failed and not out.unfinished
    _assert_settled_by_the_flag(db_url, items, worker.TicketDesk(db_url).rows())
    flagged = {f"send_reply:{it['key']}" for it in items if it["send_reply"]}
    assert _called(desk, "send_replies") == flagged
    assert not _called(desk, "retract_replies") and not _called(desk, "unassign_tickets")
    # The batch outcome carries the skipped rows, for the audit log.
    skipped = [r for r in out.log if r["status"] == "skipped"]
    assert {(r["key"], r["step"]) for r in skipped} == {
        (it["key"], "send_reply") for it in items if not it["send_reply"]
    }
    assert all(r["error"] is None and r["reason"] == "condition not met: send_reply" for r in skipped)
    assert SagaLog(db_url).counts("tickets") == {"done": 6}

    # A replay of the batch acts on nothing and reports the same rows, skips included.
    calls = len(desk.calls)
    again = ex.run(items, "b1")
    assert sorted(again.done) == sorted(out.done) and len(desk.calls) == calls
    assert sorted((r["key"], r["step"], r["status"]) for r in again.log) == sorted(
        (r["key"], r["step"], r["status"]) for r in out.log
    )


def test_a_step_after_a_skipped_step_runs_as_if_it_were_satisfied(db_url):
    items = worker.tickets(4)
    ex, desk = worker.executor(db_url, close=True)
    out = ex.run(items, "b1")
    assert sorted(out.done) == [it["key"] for it in items]
    log = SagaLog(db_url).load([it["key"] for it in items])
    assert {k: s["steps"]["close"][0] for k, s in log.items()} == {it["key"]: "done" for it in items}
    assert {k: s["steps"]["send_reply"][0] for k, s in log.items()} == {
        it["key"]: "done" if it["send_reply"] else "skipped" for it in items
    }
    assert _called(desk, "close_tickets") == {f"close:{it['key']}" for it in items}


# ---- (b) a failed conditional step undoes only what ran ------------------------------------


def test_a_failing_conditional_step_compensates_only_the_steps_that_ran(db_url):
    items = worker.tickets(6)
    refused = items[2]["key"]  # its params ask for a reply; the desk refuses it
    ex, desk = worker.executor(db_url, FaultPlan(permanent={("send_replies", f"send_reply:{refused}")}))
    out = ex.run(items, "b1")
    assert set(out.failed) == {refused}
    assert out.failed[refused]["failed_step"] == "send_reply" and out.failed[refused]["compensated"] == ["assign"]
    assert sorted(out.done) == sorted(it["key"] for it in items if it["key"] != refused)
    # Only the refused saga's assignment was undone; no reply was retracted, no skipped step touched.
    assert _called(desk, "unassign_tickets") == {f"assign:{refused}"}
    assert not _called(desk, "retract_replies")
    log = SagaLog(db_url).load([it["key"] for it in items])
    assert log[refused]["status"] == "compensated"
    assert log[refused]["steps"] == {"assign": ("compensated", None), "send_reply": ("failed", log[refused]["reason"])}
    rows = worker.TicketDesk(db_url).rows()
    assert rows[f"assign:{refused}"] == (False, 1) and f"send_reply:{refused}" not in rows
    # The sagas without the flag are untouched by the failure: done, their reply skipped.
    others = [it for it in items if it["key"] != refused]
    _assert_settled_by_the_flag(db_url, others, {k: v for k, v in rows.items() if not k.endswith(refused)})


def test_rollback_of_a_saga_with_a_skipped_step_undoes_what_ran(db_url):
    items = worker.tickets(2)
    ex, desk = worker.executor(db_url)
    ex.run(items, "b1")
    out = ex.rollback(items[1]["key"])  # odd ticket: its reply was skipped
    assert out.failed[items[1]["key"]]["compensated"] == ["assign"]
    assert _called(desk, "unassign_tickets") == {f"assign:{items[1]['key']}"} and not _called(desk, "retract_replies")
    steps = SagaLog(db_url).load([items[1]["key"]])[items[1]["key"]]["steps"]
    assert steps == {"assign": ("compensated", None), "send_reply": ("skipped", "condition not met: send_reply")}


# ---- (c) a killed process, resumed by another, decides the same ----------------------------


class Worker:
    """The worker process; its stdout read by a thread so every wait has a deadline."""

    def __init__(self, url: str, n: int, kill: tuple):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, worker.__file__, url, str(n), "--kill", ":".join(map(str, kill))],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def until_killpoint(self, timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith("KILLPOINT"):
                os.kill(int(line.rsplit("pid=", 1)[1]), signal.SIGKILL)
                assert self.proc.wait(timeout=30) == -signal.SIGKILL
                return line.strip()
            assert not line.startswith("FINISHED"), f"the worker finished without reaching its kill point: {line}"
        raise AssertionError(f"no kill point within {timeout_s}s (exit {self.proc.poll()})")


KILLS = [
    ("logged", "step:assign:done", 1),  # first step done; nothing decided about the reply yet
    ("logged", "step:send_reply:skipped", 1),  # the skips recorded; the flagged ones not yet running
    ("before", "send_replies", 1),  # the flagged ones logged running, the desk not called
    ("after", "send_replies", 1),  # replies sent, the log does not know
]


@pytest.mark.parametrize("kill", KILLS, ids=lambda k: ":".join(map(str, k)))
def test_a_killed_saga_resumed_by_a_fresh_executor_decides_the_condition_from_the_log(db_url, kill):
    items = worker.tickets(8)
    worker.TicketDesk(db_url)  # the desk's table, before two processes race to create it
    proc = Worker(db_url, len(items), kill)
    try:
        assert proc.until_killpoint().startswith(f"KILLPOINT {kill[0]} {kill[1]} {kill[2]}")
    finally:
        stop_process_group(proc.proc, grace_s=5)
    log = SagaLog(db_url).load([it["key"] for it in items])
    assert log and all(s["status"] in ACTIVE for s in log.values())  # killed mid-saga
    if kill[1] == "step:assign:done":  # nothing of the reply decided before the kill
        assert {s["steps"]["send_reply"][0] for s in log.values()} == {"planned"}

    # A fresh executor, another holder, knows nothing but the log: no items, only recover().
    ex, desk = worker.executor(db_url, holder="recovery")
    out = ex.recover()
    assert sorted(out.done) == [it["key"] for it in items] and not out.failed and not out.deferred
    _assert_settled_by_the_flag(db_url, items, worker.TicketDesk(db_url).rows())
    # The recovery never sent a reply the params did not ask for, and none twice.
    flagged = {f"send_reply:{it['key']}" for it in items if it["send_reply"]}
    assert _called(desk, "send_replies") <= flagged and not _called(desk, "retract_replies")
    if kill[0] == "after":  # landed before the kill: verified, not sent again
        assert not _called(desk, "send_replies")


# ---- (d) the preview, approval gating and the condition's forms ----------------------------


def test_the_preview_shows_the_skip_and_executes_nothing(db_url):
    items = worker.tickets(2)
    ex, desk = worker.executor(db_url)
    out = ex.run(items, "b1", preview=True)
    assert [[(s["step"], s.get("when"), s.get("skipped")) for s in p["steps"]] for p in out.preview] == [
        [("assign", None, None), ("send_reply", "send_reply", False)],
        [("assign", None, None), ("send_reply", "send_reply", True)],
    ]
    assert out.preview[1]["steps"][1]["idempotency_key"] == f"send_reply:{items[1]['key']}"
    assert not desk.calls and SagaLog(db_url).counts() == {} and worker.TicketDesk(db_url).rows() == {}


def test_an_approved_saga_decides_from_its_logged_params(db_url):
    items = worker.tickets(2)
    gated = items[1]["key"]
    ex, desk = worker.executor(
        db_url, approval=lambda p: "large customer" if p["key"] == gated else None, review=ReviewQueue(db_url)
    )
    out = ex.run(items, "b1")
    assert out.done == [items[0]["key"]] and out.awaiting_approval == {gated: "large customer"}
    [item] = ReviewQueue(db_url).pending()
    assert [(s["step"], s.get("skipped")) for s in item["proposal"]["plan"]["steps"]] == [
        ("assign", None),
        ("send_reply", True),
    ]
    assert SagaLog(db_url).approve(gated, "alice")
    approved, desk2 = worker.executor(db_url, holder="approval")  # another process, from the log
    assert approved.execute([gated]).done == [gated]
    assert SagaLog(db_url).load([gated])[gated]["steps"]["send_reply"][0] == "skipped"
    assert not _called(desk2, "send_replies")


def test_conditions_are_declarative_and_read_the_params_as_logged():
    act = worker.ticket_plan(object.__new__(worker.TicketDesk)).steps["assign"].action  # never called here
    plan = SagaPlan(
        [
            PlanStep("a", act),
            PlanStep("b", act, ("a",), When("tier", "gold")),
            PlanStep("c", act, ("a",), When("muted", negate=True)),
            PlanStep("d", act, ("a",), When("ids", ["x"])),  # a tuple in memory is a list in the log
        ]
    )

    def skipped(params):
        return {s["step"]: s["skipped"] for s in plan.describe({"key": "k", **params})["steps"] if "skipped" in s}

    assert skipped({"tier": "gold", "muted": False, "ids": ("x",)}) == {"b": False, "c": False, "d": False}
    assert skipped({"tier": "silver", "muted": 1}) == {"b": True, "c": True, "d": True}
    assert [s.when and str(s.when) for s in plan.steps.values()] == [
        None,
        'tier == "gold"',
        "not muted",
        'ids == ["x"]',
    ]
    with pytest.raises(TypeError, match="not in the saga log"):
        PlanStep("e", act, when=lambda p: True)
