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
from assets.invoices.training import read_events, seed_erp, train
from assets.invoices.workflow import EVENT_TYPES, MODEL_NAME, batch_policy, invoice_batches, registry
from orchestration.cli.status import inbox_status
from orchestration.trigger.inbox import Inbox
from orchestration.trigger.runner import INSTANCE_OVERRIDES, QUIET, run_pending_batches
from resources.chat_model import DisabledChatModel
from resources.local_model import LocalModel

TRAINING_SEED_OFFSET = 1000
CALIBRATION_SEED_OFFSET = 2000


class _NoProgress:
    def stage(self, description: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


def prepare(
    directory: Path, n_invoices: int, seed: int, erp: ERPResource, local_model: LocalModel, progress=None
) -> dict:
    """Write the sample, seed the ERP with it, and train the local model on a held-out
    sample (another seed, its own scratch ERP) so accuracy is not measured on training data.
    `progress` (stage/advance, e.g. the CLI's bars) hears of each step."""
    progress = progress or _NoProgress()
    progress.stage(f"Writing {n_invoices} sample invoices and seeding the ERP")
    paths = sample_data.write_sample_data(directory, n_invoices=n_invoices, seed=seed)
    seed_erp(erp, directory)
    progress.stage("Training the local model on a held-out sample")
    training_dir = directory / "training"
    sample_data.write_sample_data(training_dir, n_invoices=2000, seed=seed + TRAINING_SEED_OFFSET)
    scratch = ERPResource(url=f"sqlite:///{training_dir / 'erp.db'}")
    seed_erp(scratch, training_dir)
    model = train(local_model, scratch, training_dir)
    # The calibrator is fitted on a third sample (stand-in for reviewed outcomes), so it
    # sees neither the training data nor the stream it will be judged on.
    progress.stage("Fitting the confidence calibrator")
    calibration_dir = directory / "calibration"
    sample_data.write_sample_data(calibration_dir, n_invoices=2000, seed=seed + CALIBRATION_SEED_OFFSET)
    calibrator = fit_calibrator(calibration_dir, local_model, DisabledChatModel())
    calibrator.save(calibrator_path(local_model))
    return {
        "paths": {k: str(v) for k, v in paths.items()},
        "model": model,
        "calibrator": {"version": calibrator.version, **calibrator.report},
    }


def accuracy(inbox: Inbox, labels: dict[str, dict]) -> dict:
    """Decisions made without a person, compared with the ground truth."""
    import sqlalchemy as sa

    from orchestration.core.db import inbox as inbox_table

    with inbox.engine.connect() as conn:
        rows = conn.execute(
            sa.select(inbox_table.c.event_id, inbox_table.c.status, inbox_table.c.outcome).where(
                inbox_table.c.type.in_(EVENT_TYPES)
            )
        ).all()
    decided = [(labels[e]["label"], (o or {}).get("decision")) for e, s, o in rows if s == "done" and e in labels]
    correct = sum(1 for truth, got in decided if truth == got)
    return {
        "decided": len(decided),
        "correct": correct,
        "accuracy": round(correct / len(decided), 4) if decided else None,
        "escalated": sum(1 for _, s, _ in rows if s == "escalated"),
    }


def prepare_sample(resources, directory: Path, n_events: int, seed: int, progress=None) -> dict:
    """`bosun sample-data` and `bosun dev`: the sample, the seeded ERP and the trained model."""
    return prepare(directory, n_events, seed, resources["erp"], resources["local_model"], progress)


def sample_prepared(resources, directory: Path) -> bool:
    """Whether `bosun dev` can start without preparing the sample first."""
    return resources["local_model"].exists(MODEL_NAME) and (directory / "erp.json").exists()


def run_demo(defs: dg.Definitions, home: Path, n_events: int, seed: int, progress=None) -> dict:
    progress = progress or _NoProgress()
    resources = defs.resources
    erp, local_model, db = resources["erp"], resources["local_model"], resources["bosun_db"]
    started = time.perf_counter()
    prep = prepare(home / "sample", n_events, seed, erp, local_model, progress)
    progress.stage("Ingesting the sample into the inbox")
    inbox = db.inbox()
    ingest = inbox.ingest(read_events(prep["paths"]["invoices"]), registry).as_dict()
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(tempdir=str(home / "dagster"), overrides=INSTANCE_OVERRIDES) as instance:
        progress.stage("Refreshing the context (vendors, purchase orders, policy index)")
        dg.materialize(context_assets, instance=instance, resources=resources, run_config=QUIET)
        progress.stage("Running the batches (context, decision, action, checks)", total=ingest["accepted"])
        report = run_pending_batches(
            defs,
            "invoice_batch_job",
            invoice_batches,
            EVENT_TYPES,
            inbox,
            instance,
            batch_policy,
            on_batch=lambda _key, n: progress.advance(n),
        )
    progress.stage("Verifying the audit chain and settling payments")
    return {
        "ingest": {k: v for k, v in ingest.items() if k != "rejections"},
        "batches": len(report.batches),
        "failed_batches": report.failed,
        "status": inbox_status(db.resolved_url).as_dict(),
        "audit": db.audit().verify().as_dict(),
        "accuracy": accuracy(inbox, sample_data.load_labels(home / "sample")),
        # The seeded bank settles the payments (most on time, some late, failed or returned)
        # and the delayed check judges every due day: what `payment_settlements` reports.
        "settlements": settle_sample(erp, seed),
        "model": prep["model"],
        "seconds": round(time.perf_counter() - started, 2),
    }
