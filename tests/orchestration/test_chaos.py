"""The chaos benchmark at a bounded size: a few hundred invoice events (resubmissions,
re-deliveries, late older versions, malformed lines) through `dagster-daemon run` (inbox
sensor -> queued batch runs), a run worker SIGKILLed while its sagas execute and then the
whole daemon, no operator step. Every event ends terminal, nothing is paid or posted twice,
ledger = payments = the fault-free in-process run's, the audit verifies and the dead letters
are only real failures. On Postgres (a private cluster, initdb + pg_ctl on a free port) the
database is also restarted (`pg_ctl restart -m immediate`) while a batch's sagas run.
Full size: `python benchmarks/chaos.py --events 5000 --storage sqlite|postgres`."""

import sys
from pathlib import Path

import pytest
from bosun_testing import service_unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import chaos  # noqa: E402


# A lease left by the killed daemon's runs can hold a batch for its 300 s lifetime: allow for it.
@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_daemon_path_recovers_from_killed_workers_and_daemon_without_an_operator(
    storage, trained_model_dir, bosun_home
):
    # 200 invoices (about 210 lines) arrive at once: three batch runs at the same time, one
    # killed while its sagas run, then the daemon with the other two (and on Postgres the
    # database under a third). The fault-free reference run goes beside it (its figures are
    # the benchmark's business, not the test's).
    if storage == "postgres" and not chaos.postgres_binaries():
        service_unavailable("PostgreSQL server binaries (initdb, pg_ctl)", FileNotFoundError("pg_ctl"))
    figures = chaos.run_chaos(
        events=200,
        storage=storage,
        seed=5,
        worker_kills=1,
        daemon_kills=1,
        pg_restarts=1 if storage == "postgres" else 0,
        timeout=900,
        model_dir=trained_model_dir,
        feed_chunks=1,
        reference_in_parallel=True,
    )
    assert figures["ok"], figures["problems"]
    assert figures["malformed"] > 0 and figures["late_versions"] > 0
    expected = ["worker", "daemon"] + (["postgres"] if storage == "postgres" else [])
    assert [k["kind"] for k in figures["kills"]] == expected
    # The kills were recovered by the machinery, not by luck: a run was failed or re-run.
    assert figures["runs"]["dagster_retries"] + figures["runs"]["recovery_reruns"] >= 1
    assert figures["last_kill_to_last_terminal_s"] is not None
