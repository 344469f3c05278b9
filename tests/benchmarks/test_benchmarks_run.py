"""Every benchmark still runs and prints its figures, on a small size: a benchmark that
rots silently is worse than none. (Speed itself is judged from the figures, not here.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(
    "script,args",
    [
        ("throughput.py", ["--events", "300", "--batch-size", "100", "--per-event-sample", "2"]),
        ("context.py", ["--sizes", "200", "--repeat", "1"]),
        ("actions.py", ["--sagas", "200", "--batch", "100"]),
        ("decisions.py", ["--events", "800"]),  # exits 1 when a goal is missed; 800 keeps ECE meaningful
        ("decisions.py", ["--workflow", "tickets", "--events", "1000"]),  # the ticket workflow's goals
        ("observability.py", ["--events", "300", "--batch-size", "150", "--rows", "200"]),
        ("feedback.py", ["--events", "500", "--sizes", "150,300"]),  # exits 1 when the loop does not improve
        ("audit.py", ["--records", "2000"]),
        ("inbox_race.py", ["--events", "400"]),  # Postgres only; exits 1 when an event is left, doubled or skipped
        ("outcome_checks.py", ["--events", "200"]),
        ("guards.py", ["--repeat", "1"]),  # exits 1 when a recall, false-redaction or false-quarantine goal is missed
        ("daemon_path.py", ["--events", "200", "--timeout", "200"]),  # exits 1 when events are left not terminal
    ],
)
def test_benchmark_runs_and_prints_figures(script, args, bosun_home):
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "no figures printed"
    if script == "throughput.py":
        figures = json.loads(proc.stdout)
        assert figures["bosun_batches"]["events"] == figures["events"] == figures["bare_loop"]["events"]
    if script == "daemon_path.py":  # a table, then the figures as one JSON line
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        path = figures["daemon_path"]
        assert path["events"] == figures["bare_loop"]["events"] > 0 and path["events_per_s"] > 0
        assert path["latency_s"]["p99"] > 0 and path["peak_rss_mib"] > 0 and figures["ratio_to_bare"] > 0
    if script == "observability.py":
        figures = json.loads(proc.stdout)
        assert figures["batch_metrics"]["batches"] >= 2 and figures["spans"]["spans"] == 6 * 150
