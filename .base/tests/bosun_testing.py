"""Helpers shared by tests (not fixtures): how a missing service is reported."""

import os

import pytest

REQUIRE_SERVICES = os.environ.get("BOSUN_REQUIRE_SERVICES") == "1"


def service_unavailable(what: str, err: Exception):
    """Skip with the reason, or fail under BOSUN_REQUIRE_SERVICES=1 (CI), where every
    service must be there."""
    msg = f"{what} is not reachable ({type(err).__name__}: {err})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg}, and BOSUN_REQUIRE_SERVICES=1 requires it")
    pytest.skip(msg)
