"""What predicting with the local model costs a fresh process (as a batch run is): its linear form
(resources/linear_form.py, numpy only) against the scikit-learn pipeline it was compiled from,
in the same run.

Each way runs in a new interpreter that imports the resource, loads the model and predicts a
batch: wall time from start to answer, the time of the prediction call alone, and peak RSS.

    python benchmarks/local_model.py [--records 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PREDICT = """
import json, sys, time
started = time.perf_counter()
from resources.local_model import LocalModel
records = json.loads(open(sys.argv[2]).read())
model = LocalModel(model_dir=sys.argv[1])
call = time.perf_counter()
model.predict("m", records)
done = time.perf_counter()
print(json.dumps({"process_s": done - started, "predict_s": done - call,
                  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent process
                  "peak_rss_mib": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024,
                  "sklearn_imported": "sklearn" in sys.modules}))
"""


def records(n: int, seed: int) -> tuple[list[dict], list[str]]:
    """Invoice-shaped features: numbers, flags, a one-hot risk tier; three labels."""
    rng = random.Random(seed)
    out, labels = [], []
    for _ in range(n):
        amount, known, tier = rng.uniform(1, 5), rng.random() < 0.9, rng.choice(["low", "medium", "high"])
        out.append(
            {
                "vendor_known": float(known),
                "vendor_active": float(rng.random() < 0.95),
                f"risk={tier}": 1.0,
                "po_found": float(rng.random() < 0.9),
                "po_open": float(rng.random() < 0.9),
                "currency_matches_po": float(rng.random() < 0.95),
                "over_po_ratio": rng.uniform(-0.2, 0.3),
                "log_amount": amount,
                "already_paid": float(rng.random() < 0.03),
                "injection": float(rng.random() < 0.02),
            }
        )
        score = (0 if known else -2) + (amount - 3) + (1 if tier == "high" else 0) + rng.gauss(0, 0.5)
        labels.append("approve" if score < 0.5 else "hold" if score < 1.5 else "reject")
    return out, labels


def run_once(model_dir: Path, batch: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PREDICT, str(model_dir), str(batch)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from resources.local_model import LocalModel

    with tempfile.TemporaryDirectory(prefix="bosun-bench-model-") as tmp:
        base = Path(tmp)
        linear, pipeline = base / "linear", base / "pipeline"
        LocalModel(model_dir=str(linear)).fit("m", *records(2000, seed=1))
        pipeline.mkdir()
        (pipeline / "m.joblib").write_bytes((linear / "m.joblib").read_bytes())  # the same model, no form
        batch = base / "batch.json"
        batch.write_text(json.dumps(records(args.records, seed=2)[0]))
        ways: dict[str, list[dict]] = {"linear_form": [], "scikit_learn": []}
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            ways["linear_form"].append(run_once(linear, batch))
            ways["scikit_learn"].append(run_once(pipeline, batch))
    medians = {
        way: {k: round(statistics.median(r[k] for r in runs), 3) for k in ("process_s", "predict_s", "peak_rss_mib")}
        | {"sklearn_imported": runs[0]["sklearn_imported"]}
        for way, runs in ways.items()
    }
    lin, skl = medians["linear_form"], medians["scikit_learn"]
    print(
        json.dumps(
            {
                "records": args.records,
                "repeat": args.repeat,
                **medians,
                "ratios": {
                    "process_s_linear_over_sklearn": round(lin["process_s"] / skl["process_s"], 3),
                    "peak_rss_linear_over_sklearn": round(lin["peak_rss_mib"] / skl["peak_rss_mib"], 3),
                },
                "peak_rss_saved_mib": round(skl["peak_rss_mib"] - lin["peak_rss_mib"], 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
