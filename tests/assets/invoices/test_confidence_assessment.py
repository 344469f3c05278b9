"""Confidence of invoice decisions: factors on every decision, the calibrator asset and
its ECE check, one bounded re-retrieval before escalating."""

import json

import dagster as dg
import pytest

GOOD_FACTS = {
    "vendor_known": True,
    "vendor_active": True,
    "risk_tier": "low",
    "po_found": True,
    "po_open": True,
    "po_vendor_matches": True,
    "currency_matches_po": True,
    "amount": 1200.0,
    "amount_over_po_ratio": -0.1,
    "high_risk_amount": 0.0,
    "already_paid": False,
    "injection_suspected": False,
    "pii_in_memo": False,
}


def _context(passages, quality=()):
    """What the decision loop's hooks read of an invoice's context."""
    return {
        "key": "k",
        "facts": dict(GOOD_FACTS),
        "invoice": {"line_items": [{"description": "Office supplies"}]},
        "policy_passages": list(passages),
        "quality_factors": list(quality),
    }


def stand_in_model(model="local", decision="approve", local="approve", probability=0.95):
    """The loop's `reason` hook for these tests: a model that answers the same to every
    context, so only what the context says moves the confidence."""

    def reason(requests):
        return [
            {
                "key": r.item["key"],
                "facts": r.item["facts"],
                "decision": decision,
                "probability": probability,
                "probabilities": {decision: probability},
                "model": model,
                "model_version": model,
                "prompt_version": None,
                "context_hash": None,
                "local": {"decision": local, "probability": 0.8},
                "stated_amount": None,
                "invoice": r.item["invoice"],
                "context_used": {"policy_passages": r.item["policy_passages"]},
                "quality_factors": r.item["quality_factors"],
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": 0.0,
                "latency_s": 0.0,
            }
            for r in requests
        ]

    return reason


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from assets.invoices import sample_data
    from resources.knowledge_base import PolicyIndex

    d = tmp_path_factory.mktemp("policies")
    sample_data.write_sample_data(d, n_invoices=20, seed=3)
    return PolicyIndex(sample_data.load_policy_documents(d))


def _decide(context, model, index):
    from assets.invoices.decisions import decision_spec
    from assets.invoices.more_context import more_context
    from orchestration.decision.batch import decide_batch

    [decision] = decide_batch([context], model, decision_spec(), None, more_context(index))
    return decision


def test_quality_factors_from_the_context_and_model_disagreement_lower_confidence(index):
    strong = [{"doc": "a", "heading": "h", "score": 2.0}]
    plain = _decide(_context(strong), stand_in_model(), index)
    stale = _decide(
        _context(strong, [{"name": "stale_source", "penalty": 0.5, "detail": "vendors 3 days old"}]),
        stand_in_model(),
        index,
    )
    split = _decide(_context(strong), stand_in_model(model="gpt", decision="approve", local="hold"), index)
    assert plain["confidence"] == pytest.approx(0.95) and plain["route"] == "act"
    assert stale["confidence"] == pytest.approx(0.475) and stale["route"] == "escalate"
    assert {"name": "stale_source", "penalty": 0.5, "detail": "vendors 3 days old"} in stale["confidence_breakdown"]
    assert split["confidence"] == pytest.approx(0.95 * 0.7) and "models_disagree" in json.dumps(
        split["confidence_breakdown"]
    )


def test_a_knowledge_gap_asks_for_more_context_once_before_escalating(index):
    gap = _decide(
        _context([], [{"name": "missing_source", "penalty": 0.1, "detail": "x"}]),
        stand_in_model(probability=0.9),
        index,
    )
    # 0.9 * 0.9 * 0.8 (no passage) = 0.648: between ask (0.6) and act (0.75) -> re-read with a
    # broader query, which finds passages; the model is asked again, the gap penalty goes, 0.81 acts.
    assert gap["re_retrieved"] and gap["context_used"]["policy_passages"]
    assert gap["confidence"] == pytest.approx(0.81) and gap["route"] == "act"
    assert [p["why"] for p in gap["decision_loop"]["passes"]] == ["first", "low_confidence"]
    hopeless = _decide(
        _context([], [{"name": "missing_source", "penalty": 0.5, "detail": "x"}]),
        stand_in_model(probability=0.9),
        index,
    )
    assert hopeless["route"] == "escalate" and not hopeless.get("re_retrieved")
    assert len(hopeless["decision_loop"]["passes"]) == 1


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_the_calibrator_asset_reports_ece_and_every_decision_records_its_confidence(world):
    import sqlalchemy as sa

    from assets.invoices import calibration_assets
    from orchestration.core.db import audit_log

    result = dg.materialize(calibration_assets, instance=world.instance, resources=world.resources)
    meta = result.asset_materializations_for_node("invoice_confidence_calibrator")[0].metadata
    assert meta["ece_after"].value < 0.05 and meta["examples"].value > 200
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "calibration_error_is_below_limit" and check.passed
    world.ingest_sample()
    assert not world.run_pending().failed
    with world.resources["bosun_db"].audit().engine.connect() as conn:
        decisions = [
            json.loads(r)
            for r in conn.execute(sa.select(audit_log.c.record).where(audit_log.c.kind == "decision")).scalars()
        ]
    assert decisions and all(d["calibrator_version"] == meta["version"].value for d in decisions)
    assert all(d["confidence_breakdown"] for d in decisions)
