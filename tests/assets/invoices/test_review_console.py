"""The reviewer console in a real browser: headless Chromium (through chromedriver) against a
real `bosun serve`. A reviewer signs in, opens an escalated invoice, reads its decision record
and the payment plan, approves it, and the payment is made once; a second reviewer's approval
from another session is refused; a key without a review scope cannot sign in.

BOSUN_CONSOLE_SCREENSHOT=PATH saves the item page as the README shows it (docs/console.png):
only when asked, so the suite rewrites no file."""

import os
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from bosun_testing import BosunServer, chromium_driver, save_full_page, wait_in_browser

from assets.invoices.erp import payments

TIMEOUT_S = 30


def _wait(driver, condition, what: str):
    return wait_in_browser(driver, condition, what, TIMEOUT_S)


def _sign_in(driver, base: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/console/")
    _wait(driver, lambda d: d.current_url.endswith("/console/sign-in"), "the console sends a stranger to sign in")
    field = driver.find_element(By.ID, "api_key")
    assert driver.find_element(By.CSS_SELECTOR, "label[for=api_key]").text == "API key"
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "main").text


def _payments_with_key(world, key) -> int:
    with world.resources["erp"].engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(payments).where(payments.c.idempotency_key == key)
        ).scalar_one()


def test_a_reviewer_approves_an_escalated_invoice_in_the_browser_and_it_is_paid_once(make_small_world, tmp_path):
    from selenium.webdriver.common.by import By

    from orchestration.api.keys import ApiKeys

    world = make_small_world(n=150)
    world.ingest_sample()
    db = world.resources["bosun_db"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BOSUN_CONSOLE_"))}
    with ExitStack() as stack:
        # `bosun serve` starts (its imports take a while) as the batch runs.
        srv = BosunServer(env, tmp_path / "serve.log")
        stack.callback(srv.stop)
        assert not world.run_pending().failed
        item = next(
            it
            for it in db.review_queue().pending(1000)
            if not it["proposal"].get("kind") and it["proposal"]["decision"] == "approve"
        )
        key, pay_key = item["idempotency_key"], f"schedule_payment:{item['idempotency_key']}"
        assert _payments_with_key(world, pay_key) == 0
        keys = ApiKeys(db.resolved_url)
        ada, ada_key = keys.create("Ada Reviewer", ["reviews:read", "reviews:write"])
        bob, _ = keys.create("Bob Reviewer", ["reviews:write"])
        feeder, _ = keys.create("erp-feeder", ["events:write", "events:read"])
        srv.wait_ready()
        first = chromium_driver(stack, tmp_path / "chromium-ada")

        # A key without a review scope does not get in.
        _sign_in(first, srv.url, feeder)
        _wait(first, lambda d: "no review scope" in _text(d), "a feeder's key is refused")
        assert first.current_url.endswith("/console/sign-in")
        first.get(f"{srv.url}/console/")
        assert first.current_url.endswith("/console/sign-in")

        # The reviewer signs in and finds the item in the queue of every workflow.
        _sign_in(first, srv.url, ada)
        _wait(first, lambda d: "Signed in as Ada Reviewer" in d.page_source, "Ada is signed in")
        queue = _text(first)
        assert "Review queue" in queue and item["reason"] in queue
        first.find_element(By.LINK_TEXT, f"Review {item['id']}").click()
        _wait(first, lambda d: d.current_url.endswith(f"/console/reviews/{item['id']}"), "the item opens")

        # Its whole decision record, and the plan an approval executes.
        page = _text(first)
        for section in (
            "The event",
            "Context used",
            "The proposal",
            "Guardrail verdicts",
            "What approving executes",
            "Your answer",
        ):
            assert first.find_element(By.XPATH, f"//h2[normalize-space()='{section}']"), section
        assert key.split(":", 1)[1] in page and item["reason"] in page
        record = next(r["record"] for r in db.audit().records_for(key) if r["kind"] == "decision")
        for source in record["context_used"]["sources"]:  # each source with its age
            assert first.find_element(
                By.XPATH, f"//table[caption[starts-with(., 'Sources')]]//td[normalize-space()='{source}']"
            )
        for factor in record["confidence_breakdown"]:
            assert factor["name"] in page
        for guardrail in record["guardrails"]["flagged_by"] + record["guardrails"]["blocked_by"]:
            assert guardrail in page
        steps = [
            td.text for td in first.find_elements(By.XPATH, "//section[@aria-labelledby='plan-h']//tbody/tr/td[1]")
        ]
        assert steps == ["post_ledger_entry", "schedule_payment", "notify_vendor"]
        assert pay_key in page and f"Saga {key}: not planned yet" in page
        if os.environ.get("BOSUN_CONSOLE_SCREENSHOT"):
            save_full_page(first, Path(os.environ["BOSUN_CONSOLE_SCREENSHOT"]))

        # A second reviewer has the same item open in another session.
        second = chromium_driver(stack, tmp_path / "chromium-bob")
        _sign_in(second, srv.url, bob)
        _wait(second, lambda d: "Signed in as Bob Reviewer" in d.page_source, "Bob is signed in")
        second.get(f"{srv.url}/console/reviews/{item['id']}")
        assert second.find_element(By.ID, "approve")

        # Ada approves: paid once, her name recorded.
        first.find_element(By.ID, "approve-note").send_keys("PO confirmed by phone")
        first.find_element(By.ID, "approve").click()
        _wait(first, lambda d: "Approved by Ada Reviewer" in _text(d), "the approval is confirmed")
        done = _text(first)
        assert "1 saga(s) done" in done and f"Saga {key}: done, approved by Ada Reviewer" in done
        assert not first.find_elements(By.ID, "approve")
        assert _payments_with_key(world, pay_key) == 1
        assert db.inbox().lookup([key])[key]["status"] == "done"

        # Bob's approval from his session is refused; nothing is paid again.
        second.find_element(By.ID, "approve").click()
        _wait(second, lambda d: "already approved by Ada Reviewer" in _text(d), "the second approval is refused")
        assert _payments_with_key(world, pay_key) == 1
        [fb] = [f for f in db.feedback().list("invoices") if f["subject"] == key]
        assert (fb["reviewer"], fb["note"]) == ("Ada Reviewer", "PO confirmed by phone")
        reviews = [r["record"] for r in db.audit().records_for(key) if r["kind"] == "review"]
        assert [(r["by"], r["via"]) for r in reviews] == [("Ada Reviewer", f"console:{ada_key.key_id}")]

        # Signing out ends the session.
        first.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
        _wait(first, lambda d: d.current_url.endswith("/console/sign-in"), "signed out")
        first.get(f"{srv.url}/console/reviews/{item['id']}")
        assert first.current_url.endswith("/console/sign-in")
    assert db.audit().verify().ok


@pytest.fixture(autouse=True)
def _no_shared_console_secret(monkeypatch):
    """The server generates its own secret in the test's BOSUN_HOME."""
    monkeypatch.delenv("BOSUN_CONSOLE_SECRET", raising=False)
