"""A support-ticket saga with a conditional step, against a small SQL help desk; the process a test kills.

    python ticket_saga_worker.py DB_URL N [--kill when:what:n] [--batch-id B]

The help desk is a table in the test's database (`ticket_desk_effects`): one row per
effect, by idempotency key, live until undone, with how many times it was written. The
saga: `assign` → `send_reply` (only when the saga's params say `send_reply`) → with
`close=True` also `close` (after `send_reply`). Tickets T-0000.. with `send_reply` on
every even ticket. The run plans and executes one batch and prints FINISHED; --kill stops
it at a kill point of resources/fault_injection.py (KILLPOINT on stdout, then the test
SIGKILLs it by its pid).
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from orchestration.action.actions import ActionType, RetryPolicy
from orchestration.action.leases import Leases
from orchestration.action.saga_executor import PlanStep, SagaExecutor, SagaPlan
from orchestration.action.saga_log import SagaLog
from orchestration.core.db import engine_for, insert_ignoring_duplicates
from resources.fault_injection import FaultPlan, FaultySagaLog, FaultyTarget

desk_metadata = sa.MetaData()

effects = sa.Table(
    "ticket_desk_effects",
    desk_metadata,
    sa.Column("idempotency_key", sa.String(450), primary_key=True),
    sa.Column("step", sa.String(100), nullable=False),
    sa.Column("ticket_id", sa.String(100), nullable=False),
    sa.Column("live", sa.Boolean, nullable=False),
    sa.Column("writes", sa.Integer, nullable=False),  # every call that carried the key
)

STEPS = {"assign": ("assign_tickets", "unassign_tickets"), "send_reply": ("send_replies", "retract_replies")}
STEPS["close"] = ("close_tickets", "reopen_tickets")
METHODS = [m for pair in STEPS.values() for m in pair]


class TicketDesk:
    """The target: writes are idempotent by key (a repeat only counts), undo voids the row."""

    def __init__(self, url: str):
        self.engine = engine_for(url)
        desk_metadata.create_all(self.engine)

    def _apply(self, step: str, items: list[dict]) -> dict[str, str]:
        if items:
            rows = [
                {"idempotency_key": it["key"], "step": step, "ticket_id": it["ticket_id"], "live": True, "writes": 0}
                for it in items
            ]
            keys = [it["key"] for it in items]
            with self.engine.begin() as conn:
                conn.execute(insert_ignoring_duplicates(self.engine, effects, ["idempotency_key"]), rows)
                conn.execute(
                    effects.update().where(effects.c.idempotency_key.in_(keys)).values(writes=effects.c.writes + 1)
                )
        return {}

    def _undo(self, items: list[dict]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                effects.update().where(effects.c.idempotency_key.in_([it["key"] for it in items])).values(live=False)
            )

    def live(self, items: list[dict]) -> set[str]:
        with self.engine.connect() as conn:
            q = sa.select(effects.c.idempotency_key).where(
                effects.c.idempotency_key.in_([it["key"] for it in items]), effects.c.live.is_(True)
            )
            return {k for (k,) in conn.execute(q)}

    def rows(self) -> dict[str, tuple[bool, int]]:
        """idempotency key -> (live, writes)."""
        with self.engine.connect() as conn:
            return {
                k: (bool(live), n)
                for k, live, n in conn.execute(sa.select(effects.c.idempotency_key, effects.c.live, effects.c.writes))
            }

    def assign_tickets(self, items):
        return self._apply("assign", items)

    def unassign_tickets(self, items):
        self._undo(items)

    def send_replies(self, items):
        return self._apply("send_reply", items)

    def retract_replies(self, items):
        self._undo(items)

    def close_tickets(self, items):
        return self._apply("close", items)

    def reopen_tickets(self, items):
        self._undo(items)


def tickets(n: int) -> list[dict]:
    return [{"key": f"T-{i:04d}", "ticket_id": f"T-{i:04d}", "send_reply": i % 2 == 0} for i in range(n)]


def ticket_plan(desk, close: bool = False) -> SagaPlan:
    fast = RetryPolicy(attempts=3, initial_s=0.002, max_s=0.02, jitter_s=0.005)

    def action(step: str) -> ActionType:
        do, undo = STEPS[step]
        return ActionType(
            step, getattr(desk, do), getattr(desk, undo), desk.live, timeout_s=10, retry=fast, target="desk"
        )

    steps = [
        PlanStep("assign", action("assign")),
        PlanStep("send_reply", action("send_reply"), ("assign",), "send_reply"),
    ]
    if close:
        steps.append(PlanStep("close", action("close"), ("send_reply",)))
    return SagaPlan(steps)


def executor(
    url: str,
    plan: FaultPlan | None = None,
    close: bool = False,
    holder: str = "tickets",
    lease_ttl: float = 300.0,
    **kwargs,
):
    """The executor and its fault-injected desk; `plan` injects refusals and kill points."""
    plan = plan or FaultPlan()
    desk = FaultyTarget(TicketDesk(url), plan, METHODS)
    ex = SagaExecutor(
        FaultySagaLog(SagaLog(url), plan),
        "tickets",
        ticket_plan(desk, close),
        leases=Leases(url, holder, ttl_s=lease_ttl),
        entities=lambda params: [f"ticket:{params['ticket_id']}"],
        **kwargs,
    )
    return ex, desk


def main(argv: list[str]) -> int:
    url, n = argv[0], int(argv[1])
    plan = FaultPlan()
    if "--kill" in argv:
        when, *what, k = argv[argv.index("--kill") + 1].split(":")
        plan.kill = (when, ":".join(what), int(k))
    batch = argv[argv.index("--batch-id") + 1] if "--batch-id" in argv else "b1"
    # A killed worker's leases lapse quickly; a live one renews them at every step.
    ex, _ = executor(url, plan, holder=f"worker-{batch}", lease_ttl=0.5)
    out = ex.run(tickets(n), batch)
    print(f"FINISHED done={len(out.done)} failed={len(out.failed)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
