"""Combining factors, calibrating, and the act / ask / escalate thresholds."""

import numpy as np
import pytest

from orchestration.decision.confidence import (
    Calibrator,
    Factor,
    Thresholds,
    combine,
    expected_calibration_error,
    fit_and_report,
    quality_factors,
)


def test_every_factor_multiplies_and_is_kept_in_the_breakdown():
    conf, breakdown = combine(0.9, [Factor("stale_source", 0.5, "vendors 3 days old"), Factor("none", 0.0)])
    assert conf == pytest.approx(0.45)
    assert [b["name"] for b in breakdown] == ["model_probability", "stale_source"]


def test_the_context_layer_contract_is_read_and_clipped():
    got = quality_factors(
        [
            {"name": "missing_source", "penalty": 1.7, "detail": "erp timed out"},
            {"name": "knowledge_gap", "penalty": -1},
        ]
    )
    assert [(f.name, f.penalty) for f in got] == [("missing_source", 1.0), ("knowledge_gap", 0.0)]


def test_ece_is_zero_when_confidence_is_the_hit_rate_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20_000)
    hit = rng.uniform(size=conf.size) < conf
    assert expected_calibration_error(conf, hit) < 0.02
    assert expected_calibration_error(np.full(1000, 0.99), np.arange(1000) < 700) == pytest.approx(0.29)


def test_a_fitted_calibrator_fixes_an_overconfident_model_per_group(tmp_path):
    rng = np.random.default_rng(1)
    stated = rng.uniform(0.6, 1.0, 4000)
    truth = stated**3  # says 0.9 where it is right 73 % of the time
    hit = rng.uniform(size=stated.size) < truth
    groups = np.where(np.arange(stated.size) % 2 == 0, "llm", "local")
    cal = fit_and_report(stated, hit, groups)
    assert cal.report["ece_before"] > 0.1 and cal.report["ece_after"] < 0.05
    cal.save(tmp_path / "c.pkl")
    again = Calibrator.load(tmp_path / "c.pkl")
    assert again.version == cal.version and again.version.startswith("isotonic-")
    assert np.allclose(again.apply([0.9], ["llm"]), cal.apply([0.9], ["llm"]))
    assert again.apply([0.9], ["never_seen"])[0] == 0.9  # an unfitted group is left as is
    assert Calibrator.load(tmp_path / "missing.pkl").version == "uncalibrated"


def test_thresholds_route_act_ask_escalate():
    t = Thresholds(act=0.75, ask=0.6)
    assert [t.route(c) for c in (0.8, 0.75, 0.7, 0.6, 0.59)] == ["act", "act", "ask", "ask", "escalate"]
    with pytest.raises(ValueError):
        Thresholds(act=0.5, ask=0.6)
