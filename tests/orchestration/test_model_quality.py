from orchestration.decision.model_quality import PromotionRule, is_held_out, score


def test_the_held_out_split_is_stable_and_near_its_fraction():
    keys = [f"src:evt-{i}" for i in range(4000)]
    held = [k for k in keys if is_held_out(k, 0.3)]
    assert held == [k for k in keys if is_held_out(k, 0.3)]
    assert 0.27 < len(held) / len(keys) < 0.33
    # A larger fraction only adds events: nothing moves from held out to training.
    assert set(held) <= {k for k in keys if is_held_out(k, 0.5)}


def test_score_gives_accuracy_ece_and_brier():
    s = score(["a", "a", "b", "b"], ["a", "a", "b", "a"], [1.0, 1.0, 1.0, 1.0])
    assert s == {"examples": 4, "accuracy": 0.75, "ece": 0.25, "brier": 0.25}
    assert score([], [], [])["accuracy"] is None


def test_a_candidate_that_is_less_accurate_or_worse_calibrated_is_refused():
    rule = PromotionRule(max_accuracy_drop=0.0, max_brier_rise=0.0, min_held_out=3)
    before = {"examples": 10, "accuracy": 0.9, "ece": 0.05, "brier": 0.08}
    assert rule.verdict(before, {**before, "accuracy": 0.95, "ece": 0.07, "brier": 0.05}) == (True, [])
    ok, why = rule.verdict(before, {**before, "accuracy": 0.85})
    assert not ok and "accuracy 0.85" in why[0]
    ok, why = rule.verdict(before, {**before, "brier": 0.09})
    assert not ok and "Brier" in why[0]
    ok, why = rule.verdict(before, {**before, "examples": 2})
    assert not ok and "held-out" in why[0]
    # No current model: the first one is judged only on having enough examples.
    assert rule.verdict(score([], [], []), before) == (True, [])
