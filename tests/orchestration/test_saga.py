from orchestration.saga import SagaStep, run_sagas


class Target:
    def __init__(self, fail_on=(), raise_on_step=None, compensation_fails=False):
        self.applied: dict[str, list[str]] = {"a": [], "b": [], "c": []}
        self.journal: list[tuple[str, str, list[str]]] = []
        self.fail_on, self.raise_on_step, self.compensation_fails = set(fail_on), raise_on_step, compensation_fails

    def step(self, name):
        def do(items):
            if name == self.raise_on_step:
                raise TimeoutError(f"{name} timed out")
            ok = [it["key"] for it in items if (name, it["key"]) not in self.fail_on]
            self.applied[name] += ok
            self.journal.append(("do", name, ok))
            return {it["key"]: "refused" for it in items if (name, it["key"]) in self.fail_on}

        def undo(items):
            if self.compensation_fails:
                raise ConnectionError("target down")
            keys = [it["key"] for it in items]
            self.applied[name] = [k for k in self.applied[name] if k not in keys]
            self.journal.append(("undo", name, keys))

        return SagaStep(name, do, undo)


def test_failure_in_a_later_step_compensates_earlier_steps_in_reverse():
    t = Target(fail_on={("c", "2")})
    out = run_sagas([{"key": "1"}, {"key": "2"}], [t.step("a"), t.step("b"), t.step("c")])
    assert out.done == ["1"]
    assert out.failed["2"]["failed_step"] == "c" and out.failed["2"]["compensated"] == ["b", "a"]
    assert t.applied == {"a": ["1"], "b": ["1"], "c": ["1"]}
    assert [(kind, name) for kind, name, _ in t.journal if kind == "undo"] == [("undo", "b"), ("undo", "a")]


def test_a_step_that_raises_fails_every_item_in_flight():
    t = Target(raise_on_step="b")
    out = run_sagas([{"key": "1"}, {"key": "2"}], [t.step("a"), t.step("b")])
    assert out.done == [] and set(out.failed) == {"1", "2"}
    assert "TimeoutError" in out.failed["1"]["error"]
    assert t.applied["a"] == []


def test_failed_compensation_is_reported_not_hidden():
    t = Target(raise_on_step="b", compensation_fails=True)
    out = run_sagas([{"key": "1"}], [t.step("a"), t.step("b")])
    assert "ConnectionError" in out.failed["1"]["compensation_error"]
    assert any(r["status"] == "compensation_failed" for r in out.log)


class Flaky:
    """Fails each item for its first `failures` calls, then succeeds."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, {}

    def do(self, items):
        errors = {}
        for it in items:
            n = self.calls[it["key"]] = self.calls.get(it["key"], 0) + 1
            if n <= self.failures:
                errors[it["key"]] = f"HTTP 503 (call {n})"
        return errors


def test_a_step_is_retried_within_its_budget():
    f = Flaky(failures=2)
    out = run_sagas([{"key": "1"}, {"key": "2"}], [SagaStep("pay", f.do, lambda items: None, attempts=3)])
    assert out.done == ["1", "2"] and f.calls == {"1": 3, "2": 3}
    assert [r["attempts"] for r in out.log] == [3, 3]


def test_past_its_budget_an_item_fails_with_its_attempt_count():
    f = Flaky(failures=5)
    out = run_sagas([{"key": "1"}], [SagaStep("pay", f.do, lambda items: None, attempts=3)])
    assert out.failed["1"]["attempts"] == 3 and out.failed["1"]["error"] == "HTTP 503 (call 3)"
    assert f.calls == {"1": 3}
