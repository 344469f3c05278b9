"""The feedback loop on labelled invoices: accuracy and ECE before and after retraining.

A deliberately weak local model (trained on 150 sample invoices without three of the edge
cases) decides a labelled stream through the real batch path (inbox, Dagster runs, audit
log). Reviewers then label N of the decided events (approve when right, correct when
wrong; N = 100, 250, 500 by default, cumulative), and `invoice_feedback_job` runs as the
sensor would start it: feedback asset, retrained candidate with its blocking check,
promotion, calibrator refit. Before each N the weak model is restored, so every row
compares against the same baseline.

Figures per N: on the asset's own held-out reviewed events (what the promotion check
judges) and on a fixed evaluation set (decided events nobody reviewed, against the ground
truth), accuracy, ECE and Brier score of the weak model (before) and the retrained one
(after); "ECE" is the model's own probability, "cal ECE" the confidence decisions act on
(through the calibrator: the weak model's, then the one the loop refits). Exit 1 when the
largest N does not raise accuracy and lower the calibrated ECE on the evaluation set.

    python benchmarks/feedback.py [--events 1200] [--sizes 100,250,500] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

BLIND_SPOTS = {"currency_mismatch", "prompt_injection", "po_closed"}


def calibrated_ece(models, name: str, examples: list[dict], calibrator) -> float:
    """ECE of the confidence decisions act on: the model's probability through its calibrator."""
    from orchestration.decision.confidence import expected_calibration_error

    p = models.predict(name, [e["features"] for e in examples])
    hit = [got == e["label"] for got, e in zip(p.labels, examples)]
    return round(expected_calibration_error(calibrator.apply(p.confidence(), ["local"] * len(hit)), hit), 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1200)
    ap.add_argument("--sizes", default="100,250,500", help="reviewed decisions fed back, comma-separated")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    base = Path(tempfile.mkdtemp(prefix="bosun-bench-feedback-"))
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "BOSUN_LLM_MODEL",
        "BOSUN_DATABASE_URL",
        "BOSUN_ERP_DATABASE_URL",
        "DAGSTER_PG_URL",
    ):
        os.environ.pop(var, None)
    # BOSUN_SAMPLE_DIR is the calibrator's stand-in sample (another seed): the evaluated
    # stream's labels must reach neither the model nor the calibrator.
    os.environ.update(
        BOSUN_HOME=str(base),
        BOSUN_MODEL_DIR=str(base / "models"),
        BOSUN_SAMPLE_DIR=str(base / "sample"),
        BOSUN_TRAINING_DIR=str(base / "training"),
    )

    import dagster as dg

    from assets.invoices import calibration_assets, context_assets, sample_data
    from assets.invoices.context import model_features
    from assets.invoices.decisions import calibrator_path
    from assets.invoices.erp import ERPResource
    from assets.invoices.training import seed_erp, train, write_sample_subset
    from assets.invoices.workflow import EVENT_TYPES, MODEL_NAME, WORKFLOW, batch_policy, invoice_batches, registry
    from orchestration.decision.confidence import Calibrator
    from orchestration.decision.feedback_assets import evaluate
    from orchestration.definitions import build_definitions
    from orchestration.review.reviewed import decision_records
    from orchestration.trigger.runner import INSTANCE_OVERRIDES, QUIET, run_pending_batches
    from orchestration.trigger.sample_events import read_events
    from resources.local_model import LocalModel

    started = time.perf_counter()
    write_sample_subset(base / "training", 150, BLIND_SPOTS)
    scratch = ERPResource(url=f"sqlite:///{base / 'training-erp.db'}")
    seed_erp(scratch, base / "training")
    models = LocalModel(model_dir=str(base / "models"))
    weak = train(models, scratch, base / "training")["model_version"]
    models.promote(MODEL_NAME, "weak")  # the baseline, restored before every N

    sample_data.write_sample_data(base / "sample", n_invoices=600, seed=args.seed + 2000)
    sample_data.write_sample_data(base / "stream", n_invoices=args.events, seed=args.seed)
    defs = build_definitions()
    seed_erp(defs.resources["erp"], base / "stream")
    db = defs.resources["bosun_db"]
    db.inbox().ingest(read_events(base / "stream" / "invoices.jsonl"), registry)
    labels = sample_data.load_labels(base / "stream")
    calibrator_file = calibrator_path(models)
    truth = {}
    (base / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(base / "dagster"), overrides=INSTANCE_OVERRIDES) as instance:
        dg.materialize(context_assets, instance=instance, resources=defs.resources, run_config=QUIET)
        # The weak model's own calibrator, as a deployment would have it; restored with it.
        dg.materialize(calibration_assets, instance=instance, resources=defs.resources, run_config=QUIET)
        weak_calibrator = calibrator_file.read_bytes()
        report = run_pending_batches(
            defs, "invoice_batch_job", invoice_batches, EVENT_TYPES, db.inbox(), instance, batch_policy
        )
        decided = decision_records(db.resolved_url, event_types=EVENT_TYPES)
        truth = {k: labels[k.split(":", 1)[1]]["label"] for k in decided}
        keys = sorted(decided)
        random.Random(args.seed).shuffle(keys)
        pool, held = keys[: sizes[-1]], keys[sizes[-1] :]
        evaluation = [{"features": model_features(decided[k]["facts"]), "label": truth[k]} for k in held]
        decide_seconds = time.perf_counter() - started

        job = defs.resolve_job_def("invoice_feedback_job")
        rows, fed = [], 0
        for n in sizes:
            db.feedback().record_many(
                [
                    {
                        "workflow": WORKFLOW,
                        "subject": k,
                        "label": truth[k],
                        "decided": decided[k]["decision"],
                        "kind": "approve" if decided[k]["decision"] == truth[k] else "correct",
                        "reviewer": "benchmark",
                    }
                    for k in pool[fed:n]
                ]
            )
            fed = n
            models.promote("weak", MODEL_NAME)
            calibrator_file.write_bytes(weak_calibrator)
            cal_before = calibrated_ece(models, "weak", evaluation, Calibrator.load(calibrator_file))
            t = time.perf_counter()
            result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
            seconds = time.perf_counter() - t
            cand = result.asset_materializations_for_node("invoice_model_candidate")
            m = {k: v.value for k, v in cand[0].metadata.items()} if cand else {}
            models.promote(MODEL_NAME, "after")
            before, after = evaluate(models, "weak", evaluation), evaluate(models, "after", evaluation)
            cal_after = calibrated_ece(models, "after", evaluation, Calibrator.load(calibrator_file))
            rows.append(
                {
                    "corrections": n,
                    "promoted": result.success,
                    "corrected": sum(decided[k]["decision"] != truth[k] for k in pool[:n]),
                    "held_out": {
                        k: m.get(k)
                        for k in (
                            "held_out",
                            "accuracy_before",
                            "accuracy_after",
                            "ece_before",
                            "ece_after",
                            "brier_before",
                            "brier_after",
                        )
                    },
                    "evaluation": {
                        "examples": after["examples"],
                        "accuracy_before": before["accuracy"],
                        "accuracy_after": after["accuracy"],
                        "ece_before": before["ece"],
                        "ece_after": after["ece"],
                        "brier_before": before["brier"],
                        "brier_after": after["brier"],
                        "calibrated_ece_before": cal_before,
                        "calibrated_ece_after": cal_after,
                    },
                    "new_version": models.version(MODEL_NAME) if result.success else None,
                    "seconds": round(seconds, 2),
                }
            )

    print(
        f"feedback benchmark: {args.events} labelled invoices (seed {args.seed}), {len(decided)} decided in "
        f"{len(report.batches)} batch runs ({decide_seconds:.1f} s); weak start {weak} on 150 invoices "
        f"without {', '.join(sorted(BLIND_SPOTS))}; evaluation set {len(evaluation)} unreviewed decisions"
    )
    cols = [
        "corrections",
        "corrected",
        "promoted",
        "acc before",
        "acc after",
        "ECE before",
        "ECE after",
        "cal ECE before",
        "cal ECE after",
        "held-out acc",
        "held-out ECE",
        "seconds",
    ]
    print("  ".join(f"{c:>13}" for c in cols))
    for r in rows:
        e, h = r["evaluation"], r["held_out"]
        vals = [
            r["corrections"],
            r["corrected"],
            r["promoted"],
            e["accuracy_before"],
            e["accuracy_after"],
            e["ece_before"],
            e["ece_after"],
            e["calibrated_ece_before"],
            e["calibrated_ece_after"],
            f"{h['accuracy_before']}->{h['accuracy_after']}",
            f"{h['ece_before']}->{h['ece_after']}",
            r["seconds"],
        ]
        print("  ".join(f"{str(v):>13}" for v in vals))
    last = rows[-1]["evaluation"]
    goals = {
        f"accuracy rises with {sizes[-1]} corrections": last["accuracy_after"] > last["accuracy_before"],
        # The confidence decisions act on; the model's own probability is printed beside it
        # (a retrained model that is right more often can state too little confidence,
        # which is what the calibrator refit is for).
        f"calibrated ECE falls with {sizes[-1]} corrections": last["calibrated_ece_after"]
        < last["calibrated_ece_before"],
        "the retrained model was promoted": rows[-1]["promoted"],
    }
    for goal, ok in goals.items():
        print(f"  [{'ok' if ok else 'MISSED'}] {goal}")
    print(
        json.dumps({"events": args.events, "decided": len(decided), "weak_version": weak, "runs": rows, "goals": goals})
    )
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
