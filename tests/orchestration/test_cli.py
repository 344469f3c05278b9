"""The `bosun` console script as a user runs it: a subprocess of the installed entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

BOSUN = Path(sys.executable).parent / "bosun"


def bosun(*args, env_extra=None, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(env_extra or {})
    proc = subprocess.run([str(BOSUN), *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ingest_twice_reports_duplicates_and_status_counts(bosun_home, tmp_path):
    from assets.invoices import sample_data

    paths = sample_data.write_sample_data(tmp_path / "sample", n_invoices=50, seed=3)
    with open(paths["invoices"], "a") as fh:
        fh.write('{"source": "x", "id": "1", "type": "invoice.received"}\n')
    first = json.loads(bosun("ingest", str(paths["invoices"])).stdout)
    assert first["accepted"] == 50 and first["rejected"] == 1
    assert "schema_version" in first["rejections"][0]["reason"]
    second = json.loads(bosun("ingest", str(paths["invoices"])).stdout)
    assert second["accepted"] == 0 and second["duplicates"] == 50 + first["duplicates"]
    status = json.loads(bosun("status", "--json").stdout)
    assert status["by_status"] == {"received": 50, "rejected": 1}
    assert status["received"] == 51


@pytest.mark.clock
def test_demo_runs_the_whole_path_and_audit_verify_detects_tampering(tmp_path):
    home = tmp_path / "demo"
    summary = json.loads(bosun("demo", "--events", "300", "--seed", "5", "--home", str(home)).stdout)
    assert summary["failed_batches"] == [] and summary["audit"]["ok"]
    assert summary["status"]["received"] == 300
    assert sum(summary["status"]["by_status"].values()) == 300
    assert summary["accuracy"]["accuracy"] >= 0.95
    settled = summary["settlements"]  # the seeded bank, judged by the delayed check's rules
    assert settled["verdicts"]["settled_on_time"] > settled["payments"] / 2
    assert settled["failing"] == settled["payments"] - settled["verdicts"]["settled_on_time"] > 0

    env = {"BOSUN_HOME": str(home)}
    assert json.loads(bosun("audit", "verify", env_extra=env).stdout)["ok"] is True
    _every_notice_of_the_demo_leaves_once_over_smtp(env)
    engine = sa.create_engine(f"sqlite:///{home / 'bosun.db'}")
    with engine.begin() as conn:  # a decision record past the first: the chain breaks there
        seq = conn.execute(sa.text("SELECT min(seq) FROM bosun_audit_log WHERE seq > 1 AND kind = 'decision' "
                                   "AND record LIKE '%approve%'")).scalar_one()
        conn.execute(sa.text("UPDATE bosun_audit_log SET record = replace(record, 'approve', 'reject') "
                             "WHERE seq = :seq"), {"seq": seq})
    engine.dispose()
    broken = bosun("audit", "verify", env_extra=env, check=False)
    assert broken.returncode == 1 and json.loads(broken.stdout)["first_bad_seq"] == seq


def _every_notice_of_the_demo_leaves_once_over_smtp(env: dict) -> None:
    """The demo's batches queued a notice per paid invoice: `bosun outbox relay --once` sends
    each to a real SMTP server exactly once, with its idempotency key; a second pass sends none."""
    from resources.outbox import NotificationOutbox, notifications
    from smtp_server import SmtpServer

    outbox = NotificationOutbox(url=f"sqlite:///{env['BOSUN_HOME']}/bosun.db")
    with outbox.engine.connect() as conn:
        queued = {k for (k,) in conn.execute(sa.select(notifications.c.idempotency_key)
                                             .where(notifications.c.status == "queued"))}
    assert queued
    with SmtpServer() as smtp:
        smtp_env = {**env, "BOSUN_SMTP_HOST": "127.0.0.1", "BOSUN_SMTP_PORT": str(smtp.port)}
        first = json.loads(bosun("outbox", "relay", "--once", "--limit", "5000", env_extra=smtp_env).stdout)
        again = bosun("outbox", "relay", "--once", env_extra=smtp_env).stdout
    keys = [m["X-Bosun-Idempotency-Key"] for m in smtp.messages]
    assert sorted(keys) == sorted(queued) and first["messages.sent"] == len(queued) and again == ""
    assert json.loads(bosun("outbox", "status", env_extra=env).stdout) == {"sent": len(queued)}
