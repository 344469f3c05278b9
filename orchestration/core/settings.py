"""Where Bosun keeps its state, read from environment variables only.

Every setting has an embedded default so that a fresh clone runs with no service and
no key; production overrides them through the environment, never through code edits.
"""

from __future__ import annotations

import os
from pathlib import Path


def bosun_home() -> Path:
    """Directory for the embedded defaults (SQLite database, models, sample data)."""
    return Path(os.environ.get("BOSUN_HOME", ".bosun")).resolve()


def database_url() -> str:
    """Bosun's own tables: inbox, review queue, audit log (and the sample ERP)."""
    url = os.environ.get("BOSUN_DATABASE_URL")
    if url:
        return normalise_url(url)
    home = bosun_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'bosun.db'}"


def erp_database_url() -> str:
    """The ERP (ledger, payments) is a separate system; by default it lives beside Bosun."""
    url = os.environ.get("BOSUN_ERP_DATABASE_URL")
    return normalise_url(url) if url else database_url()


def outbox_database_url() -> str:
    """The notification outbox (a target system too); by default beside the ERP."""
    url = os.environ.get("BOSUN_OUTBOX_DATABASE_URL")
    return normalise_url(url) if url else erp_database_url()


def sample_dir() -> Path:
    return Path(os.environ.get("BOSUN_SAMPLE_DIR", str(bosun_home() / "sample"))).resolve()


def training_dir() -> Path:
    """The labelled sample the local model is trained on (and retrained on, with feedback)."""
    return Path(os.environ.get("BOSUN_TRAINING_DIR", str(sample_dir() / "training"))).resolve()


def model_dir() -> Path:
    return Path(os.environ.get("BOSUN_MODEL_DIR", str(bosun_home() / "models"))).resolve()


def normalise_url(url: str) -> str:
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed;
    # psycopg2 is the driver dagster-postgres uses too.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def redact_url(url: str) -> str:
    """A URL fit for logs and metadata: the password is never shown."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def api_limits() -> dict:
    """`bosun serve` limits: request body bytes, events per request, longest `wait=`."""
    return {
        "max_body_bytes": int(os.environ.get("BOSUN_API_MAX_BODY_BYTES", 1 << 20)),
        "max_batch": int(os.environ.get("BOSUN_API_MAX_BATCH", 1000)),
        "max_wait_s": float(os.environ.get("BOSUN_API_MAX_WAIT_S", 60)),
    }


def ui_url() -> str:
    """The Dagster UI's base URL, for links in alerts (BOSUN_UI_URL)."""
    return os.environ.get("BOSUN_UI_URL", "http://127.0.0.1:3000").rstrip("/")


def console_url() -> str | None:
    """The reviewer console's base URL as reviewers reach it (BOSUN_CONSOLE_URL, e.g.
    `https://reviews.example.internal/console`; `bosun dev` sets it to its own `bosun serve`),
    or None when no console is known. Credentials in it are dropped: it ends up in metadata."""
    from urllib.parse import urlsplit, urlunsplit

    raw = os.environ.get("BOSUN_CONSOLE_URL", "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"BOSUN_CONSOLE_URL must be an http(s) URL, got {parts.scheme or 'no'} scheme")
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


# The IO manager that keeps a batch's records (its events' text among them) in the run's
# memory, never pickled to disk: the audit log keeps what must outlive the run.
IN_RUN_IO_MANAGER = "bosun_in_run_io_manager"
