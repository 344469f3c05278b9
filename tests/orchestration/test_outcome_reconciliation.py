"""Reconciling recorded outcomes, the saga log and the target, without any workflow."""

from decimal import Decimal

from orchestration.verification.outcome_reconciliation import Effect, EventRecord, reconcile

STEPS = ("reserve", "charge")


def key(saga_id, step):
    return f"{step}:{saga_id}"


def saga_of(k):
    step, _, saga = k.partition(":")
    return (saga, step) if step in STEPS else None


def saga(status, steps=("done", "done"), reason=None):
    return {"status": status, "reason": reason, "steps": {s: (st, None) for s, st in zip(STEPS, steps)}}


def event(k, state="done", acted=True, amount="10.00"):
    return EventRecord(k, state, f"order {k}", acted, {"amount": Decimal(amount), "currency": "EUR"})


def effect(k, step, live=True, amount="10.00", currency="EUR"):
    return Effect(key(k, step), live, f"order {k}", {"amount": amount, "currency": currency})


def run(events, sagas, effects, elsewhere=None):
    return reconcile(events, sagas, STEPS, key, saga_of, effects, elsewhere)


def test_consistent_outcomes_reconcile():
    rec = run(
        [event("a"), event("b", "escalated", acted=False), event("c", "dead_lettered", acted=False)],
        {"a": saga("done"), "c": saga("compensated", ("compensated", "failed"), "charge refused")},
        [effect("a", "reserve"), effect("a", "charge"), effect("c", "reserve", live=False)],
    )
    assert rec.ok and rec.by_saga_status == {"done": 1, "none": 1, "compensated": 1} and rec.live_effects == 2


def test_each_kind_of_disagreement_is_named_with_its_event():
    rec = run(
        [
            event("paid-no-saga"),
            event("held", acted=False),
            event("short"),
            event("voided"),
            event("undone", "dead_lettered", acted=False),
            event("no-reason", "dead_lettered", acted=False),
        ],
        {
            "short": saga("done"),
            "voided": saga("done"),
            "undone": saga("compensated", ("compensated", "compensated"), "refused"),
            "no-reason": saga("failed", ("planned", "planned")),
        },
        [
            effect("held", "charge"),
            effect("short", "reserve"),
            effect("short", "charge", amount="9.00"),
            effect("voided", "reserve"),
            effect("voided", "charge", live=False),
            effect("undone", "reserve"),
            Effect("manual-1", True, "order short", {"amount": "10.00", "currency": "EUR"}),
        ],
    )
    found = {(d.event or d.target_key, d.kind) for d in rec.discrepancies}
    assert found == {
        ("paid-no-saga", "acted_without_saga"),
        ("held", "live_effect_without_saga"),
        ("short", "effect_mismatch"),
        ("voided", "effect_missing"),
        ("undone", "live_effect_after_saga_compensated"),
        ("no-reason", "settled_without_reason"),
        ("manual-1", "live_effect_without_saga_step"),
    }
    mismatch = next(d for d in rec.discrepancies if d.kind == "effect_mismatch")
    assert mismatch.step == "charge" and "amount is 9.00 at the target, decided 10.00" in mismatch.detail


def test_a_row_of_another_batchs_saga_is_left_to_that_batchs_check():
    # The same order paid by an earlier event (its saga done), or by a concurrent run right now.
    for other in (saga("done"), saga("running", ("done", "planned"))):
        rec = run(
            [event("dup", acted=False)],
            {},
            [Effect(key("first", "charge"), True, "order dup", {})],
            elsewhere={"first": other},
        )
        assert rec.ok
    orphan = run([event("dup", acted=False)], {}, [Effect(key("ghost", "charge"), True, "order dup", {})])
    assert [(d.event, d.kind) for d in orphan.discrepancies] == [("ghost", "live_effect_without_saga_step")]


def test_a_skipped_conditional_step_of_a_done_saga_needs_no_effect_and_must_have_none():
    rec = run(
        [event("a"), event("b")],
        {"a": saga("done", ("done", "skipped")), "b": saga("done", ("done", "skipped"))},
        [effect("a", "reserve"), effect("b", "reserve"), effect("b", "charge")],
    )
    assert {(d.event, d.kind, d.step) for d in rec.discrepancies} == {("b", "live_effect_of_skipped_step", "charge")}
