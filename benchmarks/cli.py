"""How fast the `bosun` commands answer that need no code location.

Median of N runs (default 5) of each, as a user runs them (the console script, a fresh
process each time), on one embedded home with a few hundred events:

1. baseline        - `python -c pass`: the interpreter's own start-up, the floor;
2. bosun --version - argument parsing and the CLI's imports;
3. bosun status --json - the answer the issue asked to be under 1 s;
4. the old path    - what `bosun status` cost before: importing the code location
                     (`orchestration.definitions`: Dagster, the workflows, scikit-learn).

    python benchmarks/cli.py [--runs 5]

The machine is shared and noisy: read the ratios to the baseline next to the seconds, and
the CPU seconds (user + system), which do not count the time spent waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _median_s(argv: list[str], env: dict, runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of the process: on a shared,
    loaded machine the wall time includes waiting for a core, the CPU time does not."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bosun-bench-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_"))}
    env["BOSUN_HOME"] = str(home)

    from assets.invoices import sample_data

    paths = sample_data.write_sample_data(home / "sample", n_invoices=300, seed=7)
    subprocess.run([str(BIN / "bosun"), "ingest", str(paths["invoices"])], env=env, check=True, capture_output=True)

    cases = {
        "baseline: python -c pass": [sys.executable, "-c", "pass"],
        "bosun --version": [str(BIN / "bosun"), "--version"],
        "bosun status --json": [str(BIN / "bosun"), "status", "--json"],
        "old path: import the code location": [sys.executable, "-c", "import orchestration.definitions"],
    }
    results = {name: _median_s(argv, env, args.runs) for name, argv in cases.items()}
    base = results["baseline: python -c pass"][0]
    report = {
        name: {"median_s": round(wall, 3), "median_cpu_s": round(cpu, 3), "x_baseline": round(wall / base, 1)}
        for name, (wall, cpu) in results.items()
    }
    report["status_under_1s"] = results["bosun status --json"][0] < 1.0
    print(json.dumps({"runs": args.runs, "load_average": os.getloadavg(), "results": report}, indent=2))


if __name__ == "__main__":
    main()
