"""A workflow's sample prepared for `bosun demo|sample-data|dev`, the same for every workflow:
the sample written and its target systems seeded, the local model(s) trained on a sample of
another seed and the confidence calibrator fitted on a third, so neither ever sees the stream
the demo judges them on. The workflow says how to write, train and calibrate; the seeds, the
order, the progress stages and the calibrator's saving and report are the engine's, and so is
scoring a labelled sample's guarded proposals as the calibrator's stand-in outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional

from orchestration.core.progress import NO_PROGRESS, Progress
from orchestration.decision.batch import DecisionSpec, guard
from orchestration.decision.confidence import Calibrator
from orchestration.decision.feedback_assets import Outcomes

# Added to the demo's seed: the training and calibration samples are other draws of the same generator.
TRAINING_SEED_OFFSET = 1000
CALIBRATION_SEED_OFFSET = 2000


def prepare_on_held_out_seeds(
    n_events: int,
    seed: int,
    *,
    write: Callable[[int, int], dict],
    train: Callable[[int], dict],
    calibrate: Callable[[int], Calibrator],
    calibrator_path: Path,
    sample: str,
    models: str,
    progress: Optional[Progress] = None,
) -> dict:
    """`write(n_events, seed)` writes the sample and seeds the targets with it, `train(seed)`
    trains on a sample of the training seed, `calibrate(seed)` fits the calibrator on decisions
    of a sample of the calibration seed (stand-in for reviewed outcomes); each of the first two
    returns what it reports. `sample` and `models` name them on the progress stages
    (what the sample holds and what it seeds, "the local model"). The calibrator is saved at
    `calibrator_path`, where the batches' decisions load it."""
    progress = progress or NO_PROGRESS
    progress.stage(f"Writing {n_events} {sample}")
    written = write(n_events, seed)
    progress.stage(f"Training {models} on a held-out sample (another seed)")
    trained = train(seed + TRAINING_SEED_OFFSET)
    # The calibrator is fitted on a third sample, so it sees neither the training data nor
    # the stream it will be judged on.
    progress.stage("Fitting the confidence calibrator on a third seed")
    calibrator = calibrate(seed + CALIBRATION_SEED_OFFSET)
    calibrator.save(calibrator_path)
    return {**written, **trained, "calibrator": {"version": calibrator.version, **calibrator.report}}


def guarded_outcomes(proposals: list[dict], spec: DecisionSpec, labels: Mapping[str, str]) -> Outcomes:
    """The stand-in for reviewed outcomes a calibrator is fitted on: a labelled sample's
    proposals (decided by the same path as a batch) checked against the guardrails, and for
    every decision a model took (not a hard rule, not "no result") its stated probability,
    whether it is the label (`labels` by event key) and its model group."""
    guard(proposals, spec)
    conf, correct, groups = [], [], []
    for p in proposals:
        if p["guardrails"]["blocked_by"] or p["decision"] == "no_result":
            continue
        conf.append(p["probability"])
        correct.append(p["decision"] == labels[p["key"]])
        groups.append(spec.group(p))
    return conf, correct, groups
