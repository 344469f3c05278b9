"""Reviewers' labels back into the models.

`invoice_feedback` joins each reviewed event's latest label with the facts its decision
was made from (archived in the audit log). `invoice_model_candidate` retrains the local
model on the labelled sample plus those labels and compares it with the current model on
the held-out reviewed events; its blocking check stops a worse model before
`invoice_local_model` promotes it to where every batch loads it (a new model version on
later decisions). The calibrator (calibration.py) is then refitted for the promoted model.
"""

import os
import tempfile
from collections import Counter
from pathlib import Path

import dagster as dg

from assets.invoices.context import model_features
from assets.invoices.erp import ERPResource
from assets.invoices.training import labelled_examples, seed_erp
from assets.invoices.workflow import EVENT_TYPES, MODEL_NAME, WORKFLOW
from orchestration import settings
from orchestration.db import dispose
from orchestration.lineage import layer_group
from orchestration.model_quality import PromotionRule, is_held_out, score
from orchestration.reviewed import reviewed_decisions
from resources.database import BosunDatabase
from resources.local_model import LocalModel

CANDIDATE = f"{MODEL_NAME}-candidate"
# What a model may learn to answer (the decision prompt's enum); any other label is kept in
# the feedback table and counted, never trained on.
LABELS = ("approve", "hold", "reject")
# Three in ten reviewed events judge the retrained model and are never trained on, so the
# comparison and the calibrator refit see outcomes the model did not learn from.
HELD_OUT_FRACTION = 0.3
PROMOTION = PromotionRule(max_accuracy_drop=0.0, max_brier_rise=0.0, min_held_out=20)
RETRAIN_MIN_FEEDBACK_ENV = "BOSUN_INVOICES_RETRAIN_MIN_FEEDBACK"
DEFAULT_RETRAIN_MIN_FEEDBACK = 100


def retrain_min_feedback() -> int:
    """New reviewed labels needed before the feedback sensor runs the loop again."""
    return int(os.environ.get(RETRAIN_MIN_FEEDBACK_ENV, DEFAULT_RETRAIN_MIN_FEEDBACK))


def raw_probability(record: dict) -> float:
    """The deciding model's own probability, before calibration and factors."""
    for item in record.get("confidence_breakdown") or []:
        if item.get("name") == "model_probability_raw":
            return float(item["value"])
    return max((record.get("probabilities") or {"": 0.0}).values())


def reviewed_examples(db_url: str) -> dict:
    reviewed, not_in_audit = reviewed_decisions(db_url, WORKFLOW, EVENT_TYPES)
    examples, without_facts, unusable = [], 0, Counter()
    for r in reviewed:
        record = r["decision"]
        if r["label"] not in LABELS:
            unusable[r["label"]] += 1
            continue
        if record.get("facts") is None:
            without_facts += 1  # decided before the audit archived facts: nothing to learn from
            continue
        examples.append(
            {
                "subject": r["subject"],
                "label": r["label"],
                "kind": r["kind"],
                "feedback_id": r["feedback_id"],
                "features": model_features(record["facts"]),
                "held_out": is_held_out(r["subject"], HELD_OUT_FRACTION),
                "proposed": record["proposed"],
                "model": record["model"],
                "model_version": record["model_version"],
                "probability": raw_probability(record),
                "blocked": bool(record["guardrails"].get("blocked_by")),
            }
        )
    return {
        "examples": examples,
        "not_in_audit": len(not_in_audit),
        "without_facts": without_facts,
        "unusable_labels": dict(unusable),
        "feedback_max_id": max((r["feedback_id"] for r in reviewed), default=0),
    }


def evaluate(local_model: LocalModel, name: str, examples: list[dict]) -> dict:
    if not examples or not local_model.exists(name):
        return score([], [], [])
    p = local_model.predict(name, [e["features"] for e in examples])
    return score([e["label"] for e in examples], p.labels, p.confidence())


def sample_examples(directory: Path) -> tuple[list[dict], list[str]]:
    """The labelled sample the model started from, decided against its own scratch ERP."""
    if not (directory / "labels.jsonl").exists():
        return [], []
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'erp.db'}"
        erp = ERPResource(url=url)
        seed_erp(erp, directory)
        try:
            return labelled_examples(erp, directory)
        finally:
            dispose(url)


def local_outcomes(local_model: LocalModel, examples: list[dict]) -> tuple[list[float], list[bool], list[str]]:
    """Reviewed outcomes for the calibrator: the current local model on the held-out reviewed
    events (its old probabilities say nothing about a retrained model), and each LLM
    decision's stated probability against its label. Decisions a hard rule took are not
    the model's."""
    conf, correct, groups = [], [], []
    held = [e for e in examples if e["held_out"]]
    if held and local_model.exists(MODEL_NAME):
        p = local_model.predict(MODEL_NAME, [e["features"] for e in held])
        conf += [float(c) for c in p.confidence()]
        correct += [got == e["label"] for got, e in zip(p.labels, held)]
        groups += ["local"] * len(held)
    for e in examples:
        if e["model"] != "local" and not e["blocked"] and e["proposed"] != "no_result":
            conf.append(e["probability"])
            correct.append(e["proposed"] == e["label"])
            groups.append("llm")
    return conf, correct, groups


@dg.asset(group_name=layer_group(WORKFLOW, "feedback"), kinds={"sql"})
def invoice_feedback(bosun_db: BosunDatabase) -> dg.Output[dict]:
    """Every reviewed invoice decision: the reviewer's label with the facts the decision
    was made from, split (stably, by event) into training and held-out examples."""
    data = reviewed_examples(bosun_db.resolved_url)
    ex = data["examples"]
    held = sum(e["held_out"] for e in ex)
    return dg.Output(
        data,
        metadata={
            "reviewed": len(ex) + data["not_in_audit"] + data["without_facts"] + sum(data["unusable_labels"].values()),
            "examples": len(ex),
            "training_examples": len(ex) - held,
            "held_out_examples": held,
            "corrected": sum(e["label"] != e["proposed"] for e in ex),
            "labels": dg.MetadataValue.json(dict(Counter(e["label"] for e in ex))),
            "by_kind": dg.MetadataValue.json(dict(Counter(e["kind"] for e in ex))),
            "not_in_audit": data["not_in_audit"],
            "without_archived_facts": data["without_facts"],
            "unusable_labels": dg.MetadataValue.json(data["unusable_labels"]),
            "feedback_max_id": data["feedback_max_id"],
        },
    )


@dg.asset(
    group_name=layer_group(WORKFLOW, "feedback"),
    kinds={"sklearn"},
    check_specs=[
        dg.AssetCheckSpec(
            "retrained_model_is_not_worse",
            asset="invoice_model_candidate",
            blocking=True,
            description="On the held-out reviewed events the retrained local model's accuracy does not drop "
            f"(by more than {PROMOTION.max_accuracy_drop}) and its Brier score does not rise (by more "
            f"than {PROMOTION.max_brier_rise}); at least {PROMOTION.min_held_out} such events. "
            "Blocking: a worse model is never promoted.",
        )
    ],
)
def invoice_model_candidate(invoice_feedback: dict, local_model: LocalModel):
    """The local model retrained on the labelled sample plus the reviewed labels, saved
    beside the current model (not yet used by any decision), with both measured on the
    held-out reviewed events."""
    examples = invoice_feedback["examples"]
    train = [e for e in examples if not e["held_out"]]
    held = [e for e in examples if e["held_out"]]
    base_records, base_labels = sample_examples(settings.training_dir())
    records = base_records + [e["features"] for e in train]
    labels = base_labels + [e["label"] for e in train]
    too_few = {k: n for k, n in Counter(labels).items() if n < 5}
    if not records or too_few:
        raise ValueError(
            f"cannot retrain {MODEL_NAME!r}: {len(records)} examples, classes with fewer than 5: "
            f"{too_few or 'all'}; the labelled sample is {settings.training_dir()}"
        )
    version = local_model.fit(CANDIDATE, records, labels)
    before, after = evaluate(local_model, MODEL_NAME, held), evaluate(local_model, CANDIDATE, held)
    passed, reasons = PROMOTION.verdict(before, after)
    figures = {
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "brier_before": before["brier"],
        "brier_after": after["brier"],
        "held_out": after["examples"],
    }
    yield dg.Output(
        {
            "version": version,
            "current_version": local_model.version(MODEL_NAME),
            "before": before,
            "after": after,
            "feedback_max_id": invoice_feedback["feedback_max_id"],
            "trained_on": {"sample": len(base_records), "reviewed": len(train)},
        },
        metadata={
            "candidate_version": version,
            "current_version": local_model.version(MODEL_NAME) or "none",
            "sample_examples": len(base_records),
            "reviewed_examples": len(train),
            **figures,
        },
    )
    yield dg.AssetCheckResult(
        check_name="retrained_model_is_not_worse",
        passed=passed,
        metadata={**figures, "reasons": "; ".join(reasons) or "none", "candidate_version": version},
    )


@dg.asset(group_name=layer_group(WORKFLOW, "decision"), kinds={"sklearn"})
def invoice_local_model(invoice_model_candidate: dict, local_model: LocalModel) -> dg.MaterializeResult:
    """The local model every batch decides with; a new version once a retrained candidate
    passed its check. The replaced file stays beside it as `invoices@VERSION.joblib`."""
    c = invoice_model_candidate
    on_disk = local_model.version(CANDIDATE)
    if on_disk != c["version"]:
        raise RuntimeError(
            f"candidate on disk is {on_disk}, not the checked {c['version']}: "
            "another retrain overwrote it; run the loop again"
        )
    previous = local_model.version(MODEL_NAME)
    version = local_model.promote(CANDIDATE, MODEL_NAME)
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "previous_version": previous or "none",
            "accuracy_before": c["before"]["accuracy"],
            "accuracy_after": c["after"]["accuracy"],
            "ece_before": c["before"]["ece"],
            "ece_after": c["after"]["ece"],
            "trained_on": dg.MetadataValue.json(c["trained_on"]),
            "feedback_max_id": c["feedback_max_id"],
        }
    )
