"""The batch's link to the reviewer console: only when a console is known (BOSUN_CONSOLE_URL),
never with credentials, pointing at the queue of the batch's workflow."""

import dagster as dg
import pytest

from orchestration.cli.dev import console_url
from orchestration.core import settings
from orchestration.review.queue import review_console_metadata


def test_no_console_known_no_link(monkeypatch):
    monkeypatch.delenv("BOSUN_CONSOLE_URL", raising=False)
    assert settings.console_url() is None
    assert review_console_metadata("invoices") == {}


def test_the_link_opens_the_workflows_queue(monkeypatch):
    monkeypatch.setenv("BOSUN_CONSOLE_URL", "http://127.0.0.1:8080/console/")
    assert review_console_metadata("invoices") == {
        "review_console": dg.MetadataValue.url("http://127.0.0.1:8080/console/?workflow=invoices")
    }


def test_credentials_in_the_console_url_never_reach_metadata(monkeypatch):
    monkeypatch.setenv("BOSUN_CONSOLE_URL", "https://ada:s3cret@reviews.example.internal/console")
    [link] = review_console_metadata("invoices").values()
    assert link.value == "https://reviews.example.internal/console/?workflow=invoices"


@pytest.mark.parametrize("bad", ["reviews.example.internal/console", "ftp://reviews.example.internal/console"])
def test_a_console_url_that_is_not_http_is_refused_without_failing_the_batch(monkeypatch, bad):
    monkeypatch.setenv("BOSUN_CONSOLE_URL", bad)
    with pytest.raises(ValueError, match="BOSUN_CONSOLE_URL"):
        settings.console_url()
    # The batch is not failed for it: its metadata says what is wrong instead of linking.
    assert list(review_console_metadata("invoices")) == ["review_console_error"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/console"),
        ("0.0.0.0", "http://127.0.0.1:8080/console"),
        ("::", "http://[::1]:8080/console"),
        ("reviews.local", "http://reviews.local:8080/console"),
    ],
)
def test_bosun_dev_points_the_link_at_its_own_console(host, expected):
    assert console_url(host, 8080) == expected
