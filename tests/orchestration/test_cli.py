"""The `bosun` console script as a user runs it: a subprocess of the installed entry point."""

import json
import os
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
    proc = bosun("demo", "--events", "300", "--seed", "5", "--home", str(home), timeout=900)  # 2 shared cores
    return json.loads(proc.stdout), proc.stderr, home


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
    engine = sa.create_engine(f"sqlite:///{home / 'bosun.db'}")
    with engine.begin() as conn:  # a decision record past the first: the chain breaks there
        seq = conn.execute(sa.text("SELECT min(seq) FROM bosun_audit_log WHERE seq > 1 AND kind = 'decision' "
                                   "AND record LIKE '%approve%'")).scalar_one()
        conn.execute(sa.text("UPDATE bosun_audit_log SET record = replace(record, 'approve', 'reject') "
                             "WHERE seq = :seq"), {"seq": seq})
    engine.dispose()
    broken = bosun("audit", "verify", env_extra=env, check=False)
    assert broken.returncode == 1 and json.loads(broken.stdout)["first_bad_seq"] == seq


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
    else:
        assert proc.stderr == ""


def test_status_and_version_need_no_code_location(bosun_home):
    # The import check `bosun status` is fast because of: neither Dagster nor scikit-learn is loaded.
    probe = ("import sys; from orchestration.cli import main; code = main(['status', '--json']); "
             "sys.stderr.write(','.join(m for m in ('dagster', 'sklearn', 'pandas') if m in sys.modules)); "
             "sys.exit(code)")
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
    for var in ("BOSUN_DATABASE_URL", "BOSUN_ERP_DATABASE_URL", "BOSUN_OUTBOX_DATABASE_URL", "BOSUN_MODEL_DIR",
                "BOSUN_SAMPLE_DIR", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BOSUN_SAMPLE_DIR", str(home / "sample"))

    code, out, err = _in_process(capsys, "review", "list", "--json")
    items = json.loads(out)
    assert code == 0 and items, err
    item = items[0]
    ok = [("review", "show", str(item["id"])),
          ("review", "approve", str(item["id"]), "--by", "ci"),
          ("review", "correct", item["event"], "--label", "hold", "--by", "ci"),
          ("saga", "recover"),
          ("replay", "--since", "30d", "--limit", "20", "--json")]
    for argv in ok:
        code, out, err = _in_process(capsys, *argv)
        assert code == 0, (argv, err[-2000:])
        json.loads(out)
    events = tmp_path / "events.jsonl"
    events.write_text((home / "sample" / "invoices.jsonl").read_text().splitlines()[0] + "\n")
    code, out, err = _in_process(capsys, "ingest", str(events))
    assert code == 0 and json.loads(out)["duplicates"] == 1 and "Ingesting events.jsonl" in err
    refused = [(("review", "approve", str(item["id"]), "--by", "ci"), 3),  # already decided
               (("review", "show", "999999"), 2),
               (("ingest", str(tmp_path / "missing.jsonl")), 2)]
    for argv, expected in refused:
        code, out, err = _in_process(capsys, *argv)
        assert (code, out) == (expected, ""), (argv, out, err)
        assert "bosun" in err
