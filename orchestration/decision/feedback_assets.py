"""Reviewers' labels back into a workflow's models, as assets built for any workflow.

`<prefix>_feedback` joins each reviewed event's latest label with the facts its decision was
made from (archived in the audit log). `<prefix>_model_candidate` retrains the local model on
the workflow's labelled sample plus those labels and compares it with the current model on
the held-out reviewed events; its blocking check stops a worse model before
`<prefix>_local_model` promotes it to where every batch loads it (a new model version on
later decisions). `<prefix>_confidence_calibrator` (`build_calibrator_asset`) is then refitted
for the promoted model.

A workflow supplies only what it knows (`FeedbackLoop`): the answers a model may learn, how a
decision's facts become model features, and its labelled sample. Resources are read by key
(`bosun_db`, `local_model`), so the engine needs no resource class.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Optional, Protocol, Sequence

import dagster as dg

from orchestration.core import settings
from orchestration.core.lineage import layer_group
from orchestration.decision.confidence import Calibrator, fit_and_report
from orchestration.decision.model_quality import PromotionRule, is_held_out, score
from orchestration.review.reviewed import reviewed_decisions

BOSUN_DB = "bosun_db"
LOCAL_MODEL = "local_model"

Resources = Mapping[str, Any]  # the run's resources by key
# (stated probability, correct, model group) per decision whose right answer is known.
Outcomes = tuple[list[float], list[bool], list[str]]


class Predictions(Protocol):
    labels: Sequence[str]

    def confidence(self) -> Any: ...


class ModelStore(Protocol):
    """What the loop needs of the local model resource (`local_model`)."""

    def exists(self, name: str) -> bool: ...

    def fit(self, name: str, records: list[dict], labels: list[str]) -> str: ...

    def version(self, name: str) -> str | None: ...

    def promote(self, candidate: str, name: str) -> str: ...

    def predict(self, name: str, records: list[dict]) -> Predictions: ...


def raw_probability(record: dict) -> float:
    """The deciding model's own probability, before calibration and factors."""
    for item in record.get("confidence_breakdown") or []:
        if item.get("name") == "model_probability_raw":
            return float(item["value"])
    return max((record.get("probabilities") or {"": 0.0}).values())


def evaluate(models: ModelStore, name: str, examples: list[dict]) -> dict:
    """`score` of model `name` on examples with `features` and `label` (empty when it does not exist)."""
    if not examples or not models.exists(name):
        return score([], [], [])
    p = models.predict(name, [e["features"] for e in examples])
    return score([e["label"] for e in examples], p.labels, p.confidence())


@dataclass(frozen=True)
class FeedbackLoop:
    """What one workflow's feedback loop learns from, and how a retrained model is judged."""

    workflow: str
    event_types: Sequence[str]
    model_name: str
    # What a model may learn to answer (the decision's enum); any other label is kept in the
    # feedback table and counted, never trained on.
    labels: Sequence[str]
    features: Callable[[dict], dict]  # a decision's archived facts -> the model's features
    # The labelled sample the model started from, read from the training directory: (features, labels).
    sample_examples: Callable[[Path], tuple[list[dict], list[str]]]
    asset_prefix: str  # PREFIX: PREFIX_feedback, PREFIX_model_candidate, PREFIX_local_model
    # Three in ten reviewed events judge the retrained model and are never trained on, so the
    # comparison and the calibrator refit see outcomes the model did not learn from.
    held_out_fraction: float = 0.3
    promotion: PromotionRule = field(default_factory=PromotionRule)
    default_min_feedback: int = 100  # new reviewed labels before the feedback sensor runs the loop
    # A model of one output among several (one of several labels a decision sets): what the decision
    # proposed for that output, and the label the model learns from a reviewer's answer (its part
    # for this output, with a business rule the workflow applies on top taken back, say).
    proposed_of: Callable[[dict], str] = lambda record: record["proposed"]
    learns: Callable[[str, dict], str] = lambda label, features: label
    # An unfitted pipeline for the model (e.g. a text model); None: the local model's default.
    pipeline: Optional[Callable[[], Any]] = None

    @property
    def candidate(self) -> str:
        return f"{self.model_name}-candidate"

    def key(self, what: str) -> str:
        return f"{self.asset_prefix}_{what}"

    @property
    def min_feedback_env(self) -> str:
        return f"BOSUN_{self.workflow.upper()}_RETRAIN_MIN_FEEDBACK"

    def retrain_min_feedback(self) -> int:
        """New reviewed labels needed before the feedback sensor runs the loop again."""
        return int(os.environ.get(self.min_feedback_env, self.default_min_feedback))

    def reviewed_examples(self, db_url: str) -> dict:
        reviewed, not_in_audit = reviewed_decisions(db_url, self.workflow, self.event_types)
        examples, without_facts, unusable = [], 0, Counter()
        for r in reviewed:
            record = r["decision"]
            facts = record.get("facts")
            features = self.features(facts) if facts is not None else {}
            label = self.learns(r["label"], features)
            if label not in self.labels:
                unusable[r["label"]] += 1
                continue
            if facts is None:
                without_facts += 1  # decided before the audit archived facts: nothing to learn from
                continue
            examples.append(
                {
                    "subject": r["subject"],
                    "label": label,
                    "kind": r["kind"],
                    "feedback_id": r["feedback_id"],
                    "features": features,
                    "held_out": is_held_out(r["subject"], self.held_out_fraction),
                    "proposed": self.proposed_of(record),
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

    def local_outcomes(self, models: ModelStore, examples: list[dict]) -> Outcomes:
        """Reviewed outcomes for the calibrator: the current local model on the held-out reviewed
        events (its old probabilities say nothing about a retrained model), and each LLM
        decision's stated probability against its label. Decisions a hard rule took are not
        the model's."""
        conf, correct, groups = [], [], []
        held = [e for e in examples if e["held_out"]]
        if held and models.exists(self.model_name):
            p = models.predict(self.model_name, [e["features"] for e in held])
            conf += [float(c) for c in p.confidence()]
            correct += [got == e["label"] for got, e in zip(p.labels, held)]
            groups += ["local"] * len(held)
        for e in examples:
            if e["model"] != "local" and not e["blocked"] and e["proposed"] != "no_result":
                conf.append(e["probability"])
                correct.append(e["proposed"] == e["label"])
                groups.append("llm")
        return conf, correct, groups


def build_feedback_assets(loop: FeedbackLoop) -> list[dg.AssetsDefinition]:
    """The loop's three assets: reviewed examples, the retrained candidate with its blocking
    "not worse" check, and the promoted local model."""
    name, candidate, rule = loop.model_name, loop.candidate, loop.promotion
    feedback_key, candidate_key = loop.key("feedback"), loop.key("model_candidate")

    @dg.asset(
        name=feedback_key,
        group_name=layer_group(loop.workflow, "feedback"),
        kinds={"sql"},
        required_resource_keys={BOSUN_DB},
        description=f"Every reviewed decision of {loop.workflow}: the reviewer's label with the facts the decision "
        "was made from, split (stably, by event) into training and held-out examples.",
    )
    def _feedback(context: dg.AssetExecutionContext) -> dg.Output[dict]:
        data = loop.reviewed_examples(context.resources.bosun_db.resolved_url)
        ex = data["examples"]
        held = sum(e["held_out"] for e in ex)
        return dg.Output(
            data,
            metadata={
                "reviewed": len(ex)
                + data["not_in_audit"]
                + data["without_facts"]
                + sum(data["unusable_labels"].values()),
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
        name=candidate_key,
        group_name=layer_group(loop.workflow, "feedback"),
        kinds={"sklearn"},
        ins={"feedback": dg.AssetIn(key=feedback_key)},
        required_resource_keys={LOCAL_MODEL},
        check_specs=[
            dg.AssetCheckSpec(
                "retrained_model_is_not_worse",
                asset=candidate_key,
                blocking=True,
                description="On the held-out reviewed events the retrained local model's accuracy does not drop "
                f"(by more than {rule.max_accuracy_drop}) and its Brier score does not rise (by more "
                f"than {rule.max_brier_rise}); at least {rule.min_held_out} such events. "
                "Blocking: a worse model is never promoted.",
            )
        ],
        description="The local model retrained on the labelled sample plus the reviewed labels, saved "
        "beside the current model (not yet used by any decision), with both measured on the held-out "
        "reviewed events.",
    )
    def _candidate(context: dg.AssetExecutionContext, feedback: dict):
        models: ModelStore = context.resources.local_model
        examples = feedback["examples"]
        train = [e for e in examples if not e["held_out"]]
        held = [e for e in examples if e["held_out"]]
        base_records, base_labels = loop.sample_examples(settings.training_dir())
        records = base_records + [e["features"] for e in train]
        labels = base_labels + [e["label"] for e in train]
        too_few = {k: n for k, n in Counter(labels).items() if n < 5}
        if not records or too_few:
            raise ValueError(
                f"cannot retrain {name!r}: {len(records)} examples, classes with fewer than 5: "
                f"{too_few or 'all'}; the labelled sample is {settings.training_dir()}"
            )
        version = models.fit(candidate, records, labels, **({"pipeline": loop.pipeline()} if loop.pipeline else {}))
        before, after = evaluate(models, name, held), evaluate(models, candidate, held)
        passed, reasons = rule.verdict(before, after)
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
                "current_version": models.version(name),
                "before": before,
                "after": after,
                "feedback_max_id": feedback["feedback_max_id"],
                "trained_on": {"sample": len(base_records), "reviewed": len(train)},
            },
            metadata={
                "candidate_version": version,
                "current_version": models.version(name) or "none",
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

    @dg.asset(
        name=loop.key("local_model"),
        group_name=layer_group(loop.workflow, "decision"),
        kinds={"sklearn"},
        ins={"checked": dg.AssetIn(key=candidate_key)},
        required_resource_keys={LOCAL_MODEL},
        description="The local model every batch decides with; a new version once a retrained candidate "
        f"passed its check. The replaced file stays beside it as `{name}@VERSION.joblib`.",
    )
    def _local_model(context: dg.AssetExecutionContext, checked: dict) -> dg.MaterializeResult:
        models: ModelStore = context.resources.local_model
        on_disk = models.version(candidate)
        if on_disk != checked["version"]:
            raise RuntimeError(
                f"candidate on disk is {on_disk}, not the checked {checked['version']}: "
                "another retrain overwrote it; run the loop again"
            )
        previous = models.version(name)
        version = models.promote(candidate, name)
        return dg.MaterializeResult(
            metadata={
                "model_version": version,
                "previous_version": previous or "none",
                "accuracy_before": checked["before"]["accuracy"],
                "accuracy_after": checked["after"]["accuracy"],
                "ece_before": checked["before"]["ece"],
                "ece_after": checked["after"]["ece"],
                "trained_on": dg.MetadataValue.json(checked["trained_on"]),
                "feedback_max_id": checked["feedback_max_id"],
            }
        )

    return [_feedback, _candidate, _local_model]


def fit_calibrator(
    stand_in: Outcomes, reviewed: Outcomes | None = None, source: object = "", min_outcomes: int = 50
) -> Calibrator:
    """The calibrator on the sample's stand-in outcomes plus reviewed ones (`source`: where the
    stand-ins came from, for the error)."""
    conf, correct, groups = (list(s) + list(r) for s, r in zip(stand_in, reviewed or ([], [], [])))
    if len(conf) < min_outcomes:
        raise ValueError(f"only {len(conf)} reviewed outcomes in {source}; need at least {min_outcomes} to calibrate")
    return fit_and_report(conf, correct, groups)


def build_calibrator_asset(
    loop: FeedbackLoop,
    stand_in: Callable[[Path, Resources], Outcomes],
    path: Callable[[ModelStore], Path],
    resource_keys: Collection[str] = (),
    max_ece: float = 0.05,
) -> dg.AssetsDefinition:
    """`<prefix>_confidence_calibrator`: an isotonic map per model from stated probability to the
    observed rate of correct decisions, saved at `path(local_model)` where the decisions load it,
    with an ECE check.

    It is fitted on reviewed outcomes (the feedback's held-out events re-scored by the current
    local model, and the LLM's reviewed decisions) plus `stand_in(sample directory, resources)`:
    the labelled sample decided by the same path as a batch and scored against its labels,
    until there are enough reviewed ones."""
    key = loop.key("confidence_calibrator")
    keys = {BOSUN_DB, LOCAL_MODEL, *resource_keys}

    @dg.asset(
        name=key,
        group_name=layer_group(loop.workflow, "decision"),
        kinds={"sklearn"},
        # After a retrained model is promoted, its probabilities need a calibrator of their own.
        deps=[loop.key("local_model")],
        required_resource_keys=keys,
        check_specs=[
            dg.AssetCheckSpec(
                "calibration_error_is_below_limit",
                asset=key,
                description=f"Expected calibration error after calibration < {max_ece}, "
                "measured on held-out reviewed outcomes.",
            )
        ],
        description="Isotonic map per model from stated probability to the observed rate of correct "
        "decisions; every batch's decisions load the latest one and record its version.",
    )
    def _calibrator(context: dg.AssetExecutionContext):
        resources = {k: getattr(context.resources, k) for k in keys}
        models: ModelStore = resources[LOCAL_MODEL]
        reviewed = loop.local_outcomes(models, loop.reviewed_examples(resources[BOSUN_DB].resolved_url)["examples"])
        sample = settings.sample_dir()
        calibrator = fit_calibrator(stand_in(sample, resources), reviewed, source=sample)
        calibrator.save(path(models))
        r = calibrator.report
        yield dg.MaterializeResult(
            metadata={
                "version": calibrator.version,
                "examples": r["examples"],
                "reviewed_outcomes": len(reviewed[0]),
                "model_version": models.version(loop.model_name) or "none",
                "accuracy": r["accuracy"],
                "ece_before": r["ece_before"],
                "ece_after": r["ece_after"],
            }
        )
        yield dg.AssetCheckResult(
            check_name="calibration_error_is_below_limit",
            passed=r["ece_after"] < max_ece,
            metadata={"ece_after": r["ece_after"], "ece_before": r["ece_before"], "limit": max_ece},
        )

    return _calibrator
