"""Every benchmark still runs and prints its figures, on a small size: a benchmark that
rots silently is worse than none. (Speed itself is judged from the figures, not here.)"""

import json
import os
import signal
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
        ("local_model.py", ["--records", "200", "--repeat", "1"]),
        ("daemon_path.py", ["--events", "200", "--timeout", "200"]),  # exits 1 when events are left not terminal
    ],
)
def test_benchmark_runs_and_prints_figures(script, args, bosun_home, tmp_path):
    proc = _run_benchmark([sys.executable, str(BENCH / script), *args], tmp_path)
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
        # Every handled event's latency split by stage, each stage measured on the event's own run.
        stages = path["stages_s"]
        assert set(stages) == {"sensor", "queue", "worker_start", "run_to_terminal"}
        assert all(s["n"] == path["events"] and s["p50"] >= 0 for s in stages.values()), stages
    if script == "local_model.py":
        figures = json.loads(proc.stdout)
        assert figures["linear_form"]["sklearn_imported"] is False and figures["scikit_learn"]["sklearn_imported"]
    if script == "observability.py":
        figures = json.loads(proc.stdout)
        assert figures["batch_metrics"]["batches"] >= 2 and figures["spans"]["spans"] == 6 * 150


def _run_benchmark(argv: list[str], tmp_path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """The benchmark in its own process group, its output in files: a helper a run left behind
    (Dagster's compute-log `tail`) can neither hold a pipe open past the benchmark's exit nor
    outlive the test; the whole group is stopped by its id, also on a timeout."""
    from bosun_testing import stop_process_group

    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(argv, stdout=o, stderr=e, text=True, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        finally:
            stop_process_group(proc, grace_s=5)
            try:  # what the benchmark left running in its group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return subprocess.CompletedProcess(argv, code, out.read_text(), err.read_text())
