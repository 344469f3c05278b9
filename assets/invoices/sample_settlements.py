"""A seeded bank for the sample ERP: what becomes of each scheduled payment, written to the
settlement feed (`erp_settlements`) as the bank would report it.

Each payment's fate is drawn from its own `random.Random(f"{seed}:{payment key}")`, so it
does not depend on which other payments exist or on call order; only the reports dated
up to `as_of` are written, so calling again later adds what happened since (the feed
ignores reports it already has). Most payments settle before their due date; some settle
late, some fail, some settle and come back, some are never reported.
"""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta

from assets.invoices.erp import ERPResource
from assets.invoices.settlements import FAILING, FEED, evaluate
from orchestration.core import clock
from orchestration.trigger import sample_stream as stream
from orchestration.verification.daily_checks import aware

TZ = FEED.tz  # the bank reports in the accounts-payable team's days, as the check judges them
# fate -> share of payments
FATES = (("on_time", 0.85), ("late", 0.07), ("failed", 0.04), ("returned", 0.02), ("silent", 0.02))
FAILURE_REASONS = ("account closed", "invalid IBAN", "beneficiary bank rejected")
RETURN_REASONS = ("beneficiary unknown", "duplicate payment returned")


def reports_for(payment: dict, seed: int) -> tuple[str, list[dict]]:
    """(fate, the feed rows the bank will report for this payment, dated)."""
    rng = random.Random(f"{seed}:{payment['idempotency_key']}")
    fate = stream.draw_case(rng, FATES, "silent")  # one uniform draw decides
    due = datetime.combine(payment["due_on"], time(10), tzinfo=TZ) + timedelta(minutes=rng.randint(0, 360))
    # The bank needs a few minutes at least (and `bosun dev` shows settlements soon).
    earliest = aware(payment["scheduled_at"]) + timedelta(minutes=5)
    row = {"payment_key": payment["idempotency_key"], "amount": payment["amount"], "currency": payment["currency"]}
    if fate == "on_time":
        # Up to three days early, never before it was scheduled; one scheduled after its due
        # date cannot settle on time and is reported when the bank gets to it.
        at = max(due - timedelta(days=rng.randint(0, 3)), earliest)
        return fate, [{**row, "status": "settled", "settled_at": at}]
    if fate == "late":
        return fate, [
            {**row, "status": "settled", "settled_at": max(due, earliest) + timedelta(days=rng.randint(1, 6))}
        ]
    if fate == "failed":
        return fate, [
            {
                **row,
                "status": "failed",
                "settled_at": max(due - timedelta(days=1), earliest),
                "reason": rng.choice(FAILURE_REASONS),
            }
        ]
    if fate == "returned":
        at = max(due - timedelta(days=1), earliest)
        return fate, [
            {**row, "status": "settled", "settled_at": at},
            {
                **row,
                "status": "returned",
                "settled_at": at + timedelta(days=rng.randint(1, 4)),
                "reason": rng.choice(RETURN_REASONS),
            },
        ]
    return fate, []


def simulate_settlements(erp: ERPResource, seed: int = 7, as_of: datetime | None = None) -> dict:
    """Write the bank's reports dated up to `as_of` (default now) for every live payment.
    Returns the fates drawn and the rows written."""
    as_of = aware(as_of or clock.now())
    fates: dict[str, int] = {}
    rows = []
    for p in erp.live_payments():
        if p.get("due_on") is None:
            continue
        fate, reports = reports_for(p, seed)
        fates[fate] = fates.get(fate, 0) + 1
        rows += [r for r in reports if r["settled_at"] <= as_of]
    erp.record_settlements(rows)
    return {
        "payments": sum(fates.values()),
        "fates": dict(sorted(fates.items())),
        "reports": len(rows),
        "as_of": as_of.isoformat(),
    }


def settle_sample(erp: ERPResource, seed: int = 7, days_after_last_due: int = 7) -> dict:
    """The demo's bank: run the clock past the last due date, then judge every due day as the
    daily check would. Returns the fates drawn and the verdicts."""
    due = [p["due_on"] for p in erp.live_payments() if p.get("due_on")]
    if not due:
        return {"payments": 0}
    first, last = min(due), max(due)
    as_of = datetime.combine(last + timedelta(days=days_after_last_due), time(12), tzinfo=TZ)
    simulated = simulate_settlements(erp, seed, as_of)
    result = evaluate(
        erp,
        datetime.combine(first, time(0), tzinfo=TZ),
        datetime.combine(last + timedelta(days=1), time(0), tzinfo=TZ),
        as_of,
    )
    verdicts = {v: len(rows) for v, rows in result.by_verdict.items() if rows}
    return {
        **simulated,
        "verdicts": verdicts,
        "failing": result.failing,
        "failing_examples": [d["payment_key"] for v in FAILING for d in result.by_verdict[v]][:5],
    }
