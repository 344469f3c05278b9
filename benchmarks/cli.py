"""How fast the `bosun` commands answer that need no code location.

Median of N runs (default 5) of each, as a user runs them (the console script, a fresh
process each time), on one embedded home with a few hundred events:

1. baseline        - `python -c pass`: the interpreter's own start-up, the floor;
2. bosun --version - argument parsing and the CLI's imports;
3. bosun status --json - the answer the issue asked to be under 1 s;
4. the old path    - what `bosun status` cost before: importing the code location
                     (`orchestration.definitions`: Dagster, the workflows, scikit-learn).

    python benchmarks/cli.py [--runs 5]

The machine is shared and noisy: read the ratios to the baseline next to the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _median_s(argv: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


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

    cases = {"baseline: python -c pass": [sys.executable, "-c", "pass"],
             "bosun --version": [str(BIN / "bosun"), "--version"],
             "bosun status --json": [str(BIN / "bosun"), "status", "--json"],
             "old path: import the code location": [sys.executable, "-c", "import orchestration.definitions"]}
    results = {name: _median_s(argv, env, args.runs) for name, argv in cases.items()}
    base = results["baseline: python -c pass"]
    report = {name: {"median_s": round(s, 3), "x_baseline": round(s / base, 1)} for name, s in results.items()}
    report["status_under_1s"] = results["bosun status --json"] < 1.0
    print(json.dumps({"runs": args.runs, "load_average": os.getloadavg(), "results": report}, indent=2))


if __name__ == "__main__":
    main()
