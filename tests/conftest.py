"""Shared fixtures: isolated Bosun homes, a trained local model, real Postgres.

Tests that need a service read its URL from the environment (local defaults below) and
skip when it is unreachable, except under BOSUN_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from bosun_testing import service_unavailable

# CI runs the time-dependent tests a second time with the clock a year ahead
# (`BOSUN_CLOCK_SHIFT_DAYS=365`). Subprocesses read the variable through `orchestration.core.clock`;
# in this process time-machine moves every clock (Dagster's too), so Bosun's clock reads the
# moved system time instead of adding the shift a second time.
_CLOCK_SHIFT_DAYS = os.environ.get("BOSUN_CLOCK_SHIFT_DAYS")


@pytest.fixture(scope="session", autouse=True)
def shifted_clock():
    if not _CLOCK_SHIFT_DAYS:
        yield None
        return
    from datetime import datetime, timedelta, timezone

    import time_machine

    from orchestration.core import clock

    target = datetime.now(timezone.utc) + timedelta(days=float(_CLOCK_SHIFT_DAYS))
    with time_machine.travel(target, tick=True), clock.use(lambda: datetime.now(timezone.utc)):
        yield target


# The suite never reads or writes the developer's Dagster instance: `make test` exports the
# project's DAGSTER_HOME (for `make run`), and Dagster warns on stderr when that directory has no
# dagster.yaml yet. Tests that want an instance make their own (`instance_for_test`, tmp homes).
os.environ.pop("DAGSTER_HOME", None)


PG_ADMIN_URL = os.environ.get("BOSUN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

_BOSUN_VARS = (
    "BOSUN_AUDIT_KEY",
    "BOSUN_EMBEDDINGS_MODEL",
    "BOSUN_EMBEDDINGS_BASE_URL",
    "BOSUN_DATABASE_URL",
    "BOSUN_ERP_DATABASE_URL",
    "BOSUN_OUTBOX_DATABASE_URL",
    "BOSUN_MODEL_DIR",
    "BOSUN_SAMPLE_DIR",
    "BOSUN_POLICY_DIR",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "BOSUN_LLM_MODEL",
    "DAGSTER_PG_URL",
)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """One local model for the whole session, trained on a held-out sample as `bosun demo` does."""
    from assets.invoices import sample_data
    from assets.invoices.erp import ERPResource
    from assets.invoices.training import seed_erp, train
    from resources.local_model import LocalModel

    base = tmp_path_factory.mktemp("model")
    sample_data.write_sample_data(base / "training", n_invoices=2000, seed=1007)
    scratch = ERPResource(url=f"sqlite:///{base / 'training' / 'erp.db'}")
    seed_erp(scratch, base / "training")
    train(LocalModel(model_dir=str(base / "models")), scratch, base / "training")
    return base / "models"


@pytest.fixture
def bosun_home(tmp_path, monkeypatch) -> Path:
    """A fresh embedded Bosun: its own SQLite file, no LLM, nothing from the environment."""
    for var in _BOSUN_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "bosun"
    home.mkdir()
    monkeypatch.setenv("BOSUN_HOME", str(home))
    return home


@pytest.fixture
def model_home(bosun_home, monkeypatch, trained_model_dir) -> Path:
    """A fresh embedded Bosun with the session's trained local model."""
    monkeypatch.setenv("BOSUN_MODEL_DIR", str(trained_model_dir))
    return bosun_home


def _fresh_database(admin_url: str) -> tuple[str, callable]:
    name = f"bosun_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as err:
        admin.dispose()
        service_unavailable(f"Postgres at {sa.engine.make_url(admin_url).render_as_string()}", err)
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop():
        from orchestration.core.db import dispose

        dispose(url)  # close pooled connections so the database can be dropped
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture
def pg_url():
    """A new, empty Postgres database for one test, dropped afterwards."""
    url, drop = _fresh_database(PG_ADMIN_URL)
    yield url
    drop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """A test's database, embedded and production-like: SQLite in the test's folder, then a new
    Postgres database (`pg_url`)."""
    return f"sqlite:///{tmp_path / 'bosun.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture(scope="module")
def pg_module_url():
    """One new Postgres database for a whole test module (tests empty what they use)."""
    url, drop = _fresh_database(PG_ADMIN_URL)
    yield url
    drop()


@pytest.fixture
def dagster_pg_url():
    """A second new database for Dagster's own storage (dagster-postgres)."""
    url, drop = _fresh_database(PG_ADMIN_URL)
    yield url
    drop()


@pytest.fixture(autouse=True)
def _a_live_current_instance():
    """Every test runs with a live Dagster instance as the thread's current one. Dagster builds a
    repository lazily (`dg.materialize`, `resolve_job_def`) and reads its definitions state from
    the instance last made current in the thread; after other tests' runs in the same worker that
    can be one already disposed ("Attempted to resolve undefined DagsterInstance weakref")."""
    with dg.DagsterInstance.ephemeral():
        yield
