"""The invoice workflow end to end in one process: sample data, model, batches, accuracy."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

from assets.invoices import sample_data
from assets.invoices.calibration import fit_calibrator
from assets.invoices.decisions import calibrator_path
from assets.invoices.erp import ERPResource
from assets.invoices.jobs import context_assets
from assets.invoices.sample_settlements import settle_sample
from assets.invoices.training import scratch_erp, seed_erp, train
from assets.invoices.workflow import EVENT_TYPES, MODEL_NAME, batch_policy, invoice_batches, registry
from orchestration.cli.status import inbox_status
from orchestration.core.progress import NO_PROGRESS, Progress
from orchestration.decision.confidence import Calibrator
from orchestration.decision.sample_training import prepare_on_held_out_seeds
from orchestration.trigger.runner import outcome_accuracy, run_sample
from orchestration.trigger.sample_events import read_events
from resources.chat_model import DisabledChatModel
from resources.local_model import LocalModel


def prepare(
    directory: Path,
    n_invoices: int,
    seed: int,
    erp: ERPResource,
    local_model: LocalModel,
    progress: Progress | None = None,
) -> dict:
    """Write the sample and seed the ERP with it; the local model is trained and the calibrator
    fitted on held-out samples (other seeds, each against its own scratch ERP), so accuracy is
    not measured on training data."""

    def write(n: int, seed: int) -> dict:
        paths = sample_data.write_sample_data(directory, n_invoices=n, seed=seed)
        seed_erp(erp, directory)
        return {"paths": {k: str(v) for k, v in paths.items()}}

    def train_model(seed: int) -> dict:
        # The labelled sample also stays for the feedback loop, which retrains on it.
        sample_data.write_sample_data(directory / "training", n_invoices=2000, seed=seed)
        with scratch_erp(directory / "training") as scratch:
            return {"model": train(local_model, scratch, directory / "training")}

    def calibrate(seed: int) -> Calibrator:
        sample_data.write_sample_data(directory / "calibration", n_invoices=2000, seed=seed)
        return fit_calibrator(directory / "calibration", local_model, DisabledChatModel())

    return prepare_on_held_out_seeds(
        n_invoices,
        seed,
        write=write,
        train=train_model,
        calibrate=calibrate,
        calibrator_path=calibrator_path(local_model),
        sample="sample invoices and seeding the ERP",
        models="the local model",
        progress=progress,
    )


def prepare_sample(resources, directory: Path, n_events: int, seed: int, progress=None) -> dict:
    """`bosun sample-data` and `bosun dev`: the sample, the seeded ERP and the trained model."""
    return prepare(directory, n_events, seed, resources["erp"], resources["local_model"], progress)


def sample_prepared(resources, directory: Path) -> bool:
    """Whether `bosun dev` can start without preparing the sample first."""
    return resources["local_model"].exists(MODEL_NAME) and (directory / "erp.json").exists()


def run_demo(defs: dg.Definitions, home: Path, n_events: int, seed: int, progress: Progress | None = None) -> dict:
    progress = progress or NO_PROGRESS
    resources, started = defs.resources, time.perf_counter()
    prep = prepare(home / "sample", n_events, seed, resources["erp"], resources["local_model"], progress)
    events = read_events(prep["paths"]["invoices"])
    run = run_sample(
        defs, home, events, registry, context_assets, "invoice_batch_job", invoice_batches, EVENT_TYPES, batch_policy,
        progress,
    )  # fmt: skip
    progress.stage("Settling the payments with the sample bank")
    labels = {event_id: truth["label"] for event_id, truth in sample_data.load_labels(home / "sample").items()}
    return {
        **run,
        "status": inbox_status(resources["bosun_db"].resolved_url).as_dict(),
        "accuracy": outcome_accuracy(resources["bosun_db"].inbox(), EVENT_TYPES, labels),
        # The seeded bank settles the payments (most on time, some late, failed or returned)
        # and the delayed check judges every due day: what `payment_settlements` reports.
        "settlements": settle_sample(resources["erp"], seed),
        "model": prep["model"],
        "seconds": round(time.perf_counter() - started, 2),
    }
