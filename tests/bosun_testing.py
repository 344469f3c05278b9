"""Helpers shared by tests (not fixtures): how a missing service is reported, a valid event, servers,
a headless browser."""

import os
import threading

import pytest

REQUIRE_SERVICES = os.environ.get("BOSUN_REQUIRE_SERVICES") == "1"

# One valid invoice.received v2 envelope, as a portal sends it (copy before changing it).
PORTAL_EVENT = {
    "source": "portal",
    "id": "p-1",
    "type": "invoice.received",
    "schema_version": 2,
    "occurred_at": "2026-11-02T08:00:00+01:00",
    "entity_key": "V0001:INV-1",
    "payload": {
        "invoice_id": "INV-1",
        "vendor_id": "V0001",
        "po_number": "PO-1",
        "amount": "100.00",
        "currency": "EUR",
        "issued_on": "2026-11-01",
        "due_on": "2026-12-01",
        "line_items": [{"description": "bolts", "quantity": "2", "unit_price": "50.00"}],
        "note": "",
        "channel": "portal",
    },
}


def invoice_event(i: int) -> dict:
    """A minimal valid invoice.received v1 envelope numbered `i` (own id, entity and invoice)."""
    return {
        "source": "s",
        "id": f"e{i}",
        "type": "invoice.received",
        "schema_version": 1,
        "occurred_at": "2026-11-02T08:00:00+00:00",
        "entity_key": f"V1:INV-{i}",
        "payload": {
            "invoice_id": f"INV-{i}",
            "vendor_id": "V1",
            "po_number": "PO-1",
            "amount": "10.00",
            "currency": "EUR",
            "issued_on": "2026-11-01",
            "due_on": "2026-12-01",
            "line_items": [{"description": "x", "quantity": 1, "unit_price": "10.00"}],
        },
    }


def service_unavailable(what: str, err: Exception):
    """Skip with the reason, or fail under BOSUN_REQUIRE_SERVICES=1 (CI), where every
    service must be there."""
    msg = f"{what} is not reachable ({type(err).__name__}: {err})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg}, and BOSUN_REQUIRE_SERVICES=1 requires it")
    pytest.skip(msg)


def chromium_driver(stack, profile, width: int = 1280, height: int = 2400):
    """A headless Chromium session (selenium + the system's chromedriver) with its own
    profile directory, quit when the ExitStack closes (also on failure)."""
    import shutil

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        service_unavailable("selenium (pip install -e '.[test]')", err)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (browser and driver_path):
        service_unavailable(
            "Chromium and chromedriver (apt-get install chromium chromium-driver)",
            FileNotFoundError(browser and "chromedriver" or "chromium"),
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    # The Debian driver, named: Selenium then looks nothing up on the network.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    stack.callback(driver.quit)
    driver.implicitly_wait(0)
    return driver


def wait_in_browser(driver, condition, what: str, timeout_s: float, poll_s: float = 0.5):
    """Wait until `condition(driver)` holds. A page that navigates or re-renders replaces its
    elements: one read while that happens is stale (or not there yet), and is simply asked again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiting = WebDriverWait(
        driver,
        timeout_s,
        poll_frequency=poll_s,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    return waiting.until(condition, message=f"{what} within {timeout_s:g} s (at {driver.current_url})")


def save_full_page(driver, path) -> None:
    """The whole page, not only the window (Chromium's own capture, through chromedriver)."""
    import base64
    from pathlib import Path

    width, height = driver.execute_script("return [window.innerWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    Path(path).write_bytes(base64.b64decode(shot["data"]))


class LoopbackHttpServer:
    """A real HTTP server on a free loopback port, serving `handler` on a thread; a context
    manager that stops it (and joins the thread) on exit, also on failure."""

    def __init__(self, handler):
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


def free_port() -> int:
    """A port free now, for a server a test starts later. Drawn at random below Linux's
    ephemeral range (32768-60999): a port the kernel hands out (bind to 0) is also the one it
    gives the next outgoing connection of any parallel test (Postgres, HTTP), which then holds
    it when the server binds ('address already in use' in CI)."""
    import random
    import socket

    for _ in range(200):
        port = random.SystemRandom().randint(20000, 32000)  # not the global generator a test may seed
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found between 20000 and 32000")


def stop_process_group(proc, grace_s: float = 30) -> None:
    """Stop a process started with `start_new_session=True` and everything it started, by its
    own process group: SIGTERM, then SIGKILL after `grace_s`."""
    import signal
    import subprocess

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def dagster_graphql(port: int, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    """One query against a local Dagster webserver's GraphQL endpoint; GraphQL errors fail the test."""
    import json
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        method="POST",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = json.load(resp)
    assert "errors" not in body, body["errors"]
    return body["data"]


def dagster_webserver_up(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
            return True
    except OSError:
        return False


class BosunServer:
    """`bosun serve` (or another serving command, e.g. `("metrics",)` with `ready_path="/metrics"`)
    on a free loopback port, in its own process group, stopped by its id."""

    def __init__(self, env: dict, log_path, command: tuple = ("serve",), ready_path: str = "/v1/health"):
        import subprocess
        import sys
        from pathlib import Path

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "w")
        bosun = Path(sys.executable).parent / "bosun"
        self.ready_path = ready_path
        self.proc = subprocess.Popen(
            [str(bosun), *command, "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log_path

    def wait_ready(self, timeout: float = 60.0) -> "BosunServer":
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bosun serve exited: {open(self.log_path).read()[-2000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"bosun serve not ready after {timeout} s: {open(self.log_path).read()[-2000:]}")

    def stop(self) -> None:
        stop_process_group(self.proc, grace_s=10)
        self._log.close()


def empty_audit_tables(url: str) -> None:
    """A clean audit log in a database shared by a module's tests (faster than a new database each)."""
    from orchestration.core.db import audit_checkpoints, audit_head, audit_log, engine_for

    with engine_for(url).begin() as conn:
        for table in (audit_log, audit_checkpoints, audit_head):
            conn.execute(table.delete())
