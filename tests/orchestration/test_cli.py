"""The `bosun` console script as a user runs it: a subprocess of the installed entry point."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

BOSUN = Path(sys.executable).parent / "bosun"


def bosun(*args, env_extra=None, check=True, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(env_extra or {})
    proc = subprocess.run([str(BOSUN), *args], capture_output=True, text=True, env=env, timeout=timeout)
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
    assert status["events_by_status"] == {"received": 50, "rejected": 1}
    assert status["events_total"] == 51 and status["events_waiting"] == 50
    assert status["duplicate_deliveries"] == 50 + 1  # the refused line came twice too


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One `bosun demo` for the module: its stdout (one JSON document), its stderr, its home."""
    home = tmp_path_factory.mktemp("cli") / "demo"
    # The invoice workflow's demo: the figures and records below are its own.
    proc = bosun("demo", "--workflow", "invoices", "--events", "300", "--seed", "5", "--home", str(home), timeout=900)
    return json.loads(proc.stdout), proc.stderr, home


def _copy(home: Path, tmp_path: Path) -> Path:
    shutil.copytree(home, tmp_path / "home")
    return tmp_path / "home"


@pytest.mark.clock
def test_demo_runs_the_whole_path_and_audit_verify_detects_tampering(demo, tmp_path):
    summary, stderr, demo_home = demo
    assert "Running the batches" in stderr and "Loading the code location" in stderr  # progress, on stderr
    home = tmp_path / "demo"
    shutil.copytree(demo_home, home)  # tampered with below; the other tests read the original

    assert summary["failed_batches"] == [] and summary["audit"]["ok"]
    assert summary["status"]["events_total"] == 300
    assert sum(summary["status"]["events_by_status"].values()) == 300
    assert summary["accuracy"]["accuracy"] >= 0.95
    settled = summary["settlements"]  # the seeded bank, judged by the delayed check's rules
    assert settled["verdicts"]["settled_on_time"] > settled["payments"] / 2
    assert settled["failing"] == settled["payments"] - settled["verdicts"]["settled_on_time"] > 0

    env = {"BOSUN_HOME": str(home)}
    assert json.loads(bosun("audit", "verify", env_extra=env).stdout)["ok"] is True
    _every_notice_of_the_demo_leaves_once_over_smtp(env)
    engine = sa.create_engine(f"sqlite:///{home / 'bosun.db'}")
    with engine.begin() as conn:  # a decision record past the first: the chain breaks there
        seq = conn.execute(
            sa.text(
                "SELECT min(seq) FROM bosun_audit_log WHERE seq > 1 AND kind = 'decision' AND record LIKE '%approve%'"
            )
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE bosun_audit_log SET record = replace(record, 'approve', 'reject') WHERE seq = :seq"),
            {"seq": seq},
        )
    engine.dispose()
    broken = bosun("audit", "verify", env_extra=env, check=False)
    assert broken.returncode == 1 and json.loads(broken.stdout)["first_bad_seq"] == seq


def _every_notice_of_the_demo_leaves_once_over_smtp(env: dict) -> None:
    """The demo's batches queued a notice per paid invoice: `bosun outbox relay --once` sends
    each to a real SMTP server exactly once, with its idempotency key; a second pass sends none."""
    from smtp_server import SmtpServer

    from resources.outbox import NotificationOutbox, notifications

    outbox = NotificationOutbox(url=f"sqlite:///{env['BOSUN_HOME']}/bosun.db")
    with outbox.engine.connect() as conn:
        queued = {
            k
            for (k,) in conn.execute(
                sa.select(notifications.c.idempotency_key).where(notifications.c.status == "queued")
            )
        }
    assert queued
    with SmtpServer() as smtp:
        smtp_env = {**env, "BOSUN_SMTP_HOST": "127.0.0.1", "BOSUN_SMTP_PORT": str(smtp.port)}
        first = json.loads(bosun("outbox", "relay", "--once", "--limit", "5000", env_extra=smtp_env).stdout)
        again = bosun("outbox", "relay", "--once", env_extra=smtp_env).stdout
    keys = [m["X-Bosun-Idempotency-Key"] for m in smtp.messages]
    assert sorted(keys) == sorted(queued) and first["messages.sent"] == len(queued) and again == ""
    assert json.loads(bosun("outbox", "status", env_extra=env).stdout) == {"sent": len(queued)}


def _rewrite_decision(home: Path, key) -> tuple[int, str]:
    """An attacker's full rewrite: a decision record changed, then every later hash, link and
    the head recomputed (plain SHA-256 when `key` is None). Returns (seq, subject)."""
    from orchestration.audit.chain import chain_hash

    engine = sa.create_engine(f"sqlite:///{home / 'bosun.db'}")
    try:
        with engine.begin() as conn:
            seq, subject = conn.execute(
                sa.text(
                    "SELECT seq, subject FROM bosun_audit_log WHERE seq > 1 AND kind = 'decision' "
                    'AND record LIKE \'%"decision":"approve"%\' ORDER BY seq LIMIT 1'
                )
            ).one()
            prev = conn.execute(sa.text("SELECT hash FROM bosun_audit_log WHERE seq = :s"), {"s": seq - 1}).scalar_one()
            rows = conn.execute(
                sa.text("SELECT seq, kind, subject, record FROM bosun_audit_log WHERE seq >= :s ORDER BY seq"),
                {"s": seq},
            ).all()
            for s, kind, subj, body in rows:
                if s == seq:
                    body = body.replace('"decision":"approve"', '"decision":"reject"')
                h = chain_hash(prev, s, kind, subj, body, key)
                conn.execute(
                    sa.text("UPDATE bosun_audit_log SET record = :b, prev_hash = :p, hash = :h WHERE seq = :s"),
                    {"b": body, "p": prev, "h": h, "s": s},
                )
                prev = h
            conn.execute(sa.text("UPDATE bosun_audit_head SET hash = :h"), {"h": prev})
    finally:
        engine.dispose()
    return seq, subject


def test_a_rewrite_without_the_audit_key_fails_verify_naming_the_record(demo, tmp_path):
    home = _copy(demo[2], tmp_path)
    seq, subject = _rewrite_decision(home, key=None)
    broken = bosun("audit", "verify", env_extra={"BOSUN_HOME": str(home)}, check=False)
    out = json.loads(broken.stdout)
    assert broken.returncode == 1 and (out["first_bad_seq"], out["subject"]) == (seq, subject)
    assert "without the audit key" in out["problem"] and f"record {seq} (decision {subject})" in broken.stderr


def test_a_rewrite_with_the_audit_key_disagrees_with_the_published_anchors(demo, tmp_path):
    from orchestration.audit.key import key_from_secret

    home = _copy(demo[2], tmp_path)
    key = key_from_secret((home / "audit.key").read_text().strip(), "test")
    seq, _ = _rewrite_decision(home, key)
    env = {"BOSUN_HOME": str(home)}
    alone = bosun("audit", "verify", env_extra=env)  # the chain alone cannot tell: the key re-hashed it
    assert "no anchors found" in json.loads(alone.stdout)["anchors"]["note"]
    broken = bosun("audit", "verify", env_extra={**env, "DAGSTER_HOME": str(home / "dagster")}, check=False)
    anchors = json.loads(broken.stdout)["anchors"]
    assert broken.returncode == 1 and anchors["ok"] is False and anchors["first_bad_seq"] >= seq
    assert f"disagrees with the anchor of batch {anchors['batch']}" in broken.stderr


def _sample_personal_data(sample: Path) -> set[str]:
    """The sample's IBANs (vendors' bank details, and those written into invoice notes, spaced
    and compact) and e-mail addresses."""
    erp = json.loads((sample / "erp.json").read_text())
    needles = {v["iban"] for v in erp["vendors"]}
    text = (sample / "invoices.jsonl").read_text()
    needles |= set(re.findall(r"[a-z]+\.[a-z]+@example\.com", text))
    for spaced in re.findall(r"[A-Z]{2}\d{2}(?: [0-9A-Z]{4}){3,7}(?: [0-9A-Z]{1,4})?", text):
        needles |= {spaced, spaced.replace(" ", "")}
    return needles


def test_no_personal_data_is_left_outside_bosuns_database(demo):
    """After a demo, the sample's IBANs and e-mail addresses are only in Bosun's SQLite database
    (inbox payloads as received, the ERP's vendors, the stored vendors snapshot the batch runs
    fall back to), never in DAGSTER_HOME (no pickled step outputs, event logs, compute logs)
    or anywhere else under BOSUN_HOME. The sample directory is the input (the source systems'
    export), not something Bosun left behind."""
    _, _, home = demo
    needles = _sample_personal_data(home / "sample")
    assert len(needles) > 20 and any("@" in n for n in needles)
    pattern = re.compile(b"|".join(re.escape(n.encode()) for n in sorted(needles)))
    on_purpose = {home / "bosun.db", home / "bosun.db-wal"}
    scanned, found = 0, {}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if home / "sample" in path.parents:
            continue
        scanned += 1
        hits = set(pattern.findall(path.read_bytes()))  # bytes: SQLite pages, pickles, logs alike
        if hits:
            found[path] = hits
    assert scanned > 5 and any(home / "dagster" in p.parents for p in home.rglob("*"))
    assert set(found) - on_purpose == set(), {str(p): sorted(h)[:3] for p, h in found.items() if p not in on_purpose}
    assert home / "bosun.db" in found or home / "bosun.db-wal" in found  # the scan does find what is there


# Commands that read Bosun's tables only, run as the user runs them: (argv, exit code, stdout is JSON).
# The event and review ids are the demo's (seed 5): evt-0000001 is its first event.
LIGHT_COMMANDS = [
    (["status", "--json"], 0, True),
    (["dlq", "list"], 0, True),
    (["dlq", "retry"], 2, False),
    (["dlq", "drop", "999", "--reason", "x"], 1, True),
    (["audit", "verify"], 0, True),
    (["audit", "search", "--json", "--limit", "3"], 0, True),
    (["audit", "show", "evt-0000001", "--json"], 0, True),
    (["audit", "show", "no-such-event", "--json"], 1, False),
    (["explain", "evt-0000001", "--json"], 0, True),
    (["explain", "no-such-event", "--json"], 1, False),
    (["apikey", "create", "--name", "ci", "--scopes", "events:write"], 0, True),
    (["apikey", "create", "--name", "ci", "--scopes", "no-such-scope"], 2, False),
    (["apikey", "list"], 0, True),
    (["apikey", "revoke", "no-such-key"], 1, True),
]


@pytest.mark.parametrize("argv,code,emits_json", LIGHT_COMMANDS, ids=[" ".join(c[0][:2]) for c in LIGHT_COMMANDS])
def test_every_light_command_keeps_stdout_json_and_errors_on_stderr(demo, tmp_path, argv, code, emits_json):
    _, _, demo_home = demo
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    proc = bosun(*argv, env_extra={"BOSUN_HOME": str(home)}, check=False)
    assert proc.returncode == code, proc.stderr[-2000:]
    if emits_json:
        json.loads(proc.stdout)  # valid JSON, nothing after it
    else:
        assert proc.stdout == ""
    if code:
        assert proc.stderr.startswith("bosun") and "Traceback" not in proc.stderr
    else:  # nothing on stderr but the warning that the embedded audit key is in use
        assert all(line.startswith("BOSUN_AUDIT_KEY is not set") for line in proc.stderr.splitlines()), proc.stderr


def test_the_demo_ignores_every_workflows_production_database():
    """`bosun demo` is self-contained: a deployment's target systems (each workflow names its
    own `BOSUN_*_DATABASE_URL`) are never seeded with sample data, whichever workflow it is."""
    from orchestration.cli import demo_overridden

    environ = {
        "BOSUN_TICKETS_DATABASE_URL": "postgresql+psycopg2://prod/helpdesk",
        "BOSUN_ERP_DATABASE_URL": "postgresql+psycopg2://prod/erp",
        "BOSUN_ORDERS_DATABASE_URL": "postgresql+psycopg2://prod/shop",
        "BOSUN_LLM_MODEL": "gpt-4o-mini",
    }
    dropped = demo_overridden(environ)
    assert {"BOSUN_TICKETS_DATABASE_URL", "BOSUN_ERP_DATABASE_URL", "BOSUN_ORDERS_DATABASE_URL"} <= set(dropped)
    assert {"BOSUN_DATABASE_URL", "BOSUN_MODEL_DIR", "BOSUN_SAMPLE_DIR"} <= set(dropped)
    assert "BOSUN_LLM_MODEL" not in dropped


def test_status_and_version_need_no_code_location(bosun_home):
    # The import check `bosun status` is fast because of: neither Dagster nor scikit-learn is loaded.
    probe = (
        "import sys; from orchestration.cli import main; code = main(['status', '--json']); "
        "sys.stderr.write(','.join(m for m in ('dagster', 'sklearn', 'pandas') if m in sys.modules)); "
        "sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    assert json.loads(proc.stdout)["events_total"] == 0
    version = bosun("--version")
    assert version.stdout.startswith("bosun ") and version.stdout.split()[1][0].isdigit()


def _in_process(capsys, *argv) -> tuple[int, str, str]:
    from orchestration.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_code_location_command_keeps_stdout_json_and_errors_on_stderr(demo, tmp_path, monkeypatch, capsys):
    """The commands that load the code location, in this process (it is loaded once): each
    answer is one JSON document on stdout; progress and errors are on stderr."""
    _, _, demo_home = demo
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    monkeypatch.setenv("BOSUN_HOME", str(home))
    for var in (
        "BOSUN_DATABASE_URL",
        "BOSUN_ERP_DATABASE_URL",
        "BOSUN_OUTBOX_DATABASE_URL",
        "BOSUN_MODEL_DIR",
        "BOSUN_SAMPLE_DIR",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BOSUN_SAMPLE_DIR", str(home / "sample"))

    code, out, err = _in_process(capsys, "review", "list", "--json")
    items = json.loads(out)
    assert code == 0 and items, err
    item = items[0]
    ok = [
        ("review", "show", str(item["id"])),
        ("review", "approve", str(item["id"]), "--by", "ci"),
        ("review", "correct", item["event"], "--label", "hold", "--by", "ci"),
        ("saga", "recover"),
        ("replay", "--since", "30d", "--limit", "20", "--json"),
    ]
    for argv in ok:
        code, out, err = _in_process(capsys, *argv)
        assert code == 0, (argv, err[-2000:])
        json.loads(out)
    events = tmp_path / "events.jsonl"
    events.write_text((home / "sample" / "invoices.jsonl").read_text().splitlines()[0] + "\n")
    code, out, err = _in_process(capsys, "ingest", str(events))
    assert code == 0 and json.loads(out)["duplicates"] == 1 and "Ingesting events.jsonl" in err
    refused = [
        (("review", "approve", str(item["id"]), "--by", "ci"), 3),  # already decided
        (("review", "show", "999999"), 2),
        (("ingest", str(tmp_path / "missing.jsonl")), 2),
    ]
    for argv, expected in refused:
        code, out, err = _in_process(capsys, *argv)
        assert (code, out) == (expected, ""), (argv, out, err)
        assert "bosun" in err
