"""The confidence calibrator of the invoice decisions, as an asset with an ECE check.

It is fitted on reviewed outcomes: decisions whose right answer a person confirmed (the
feedback asset's held-out events, re-scored by the current local model, and the LLM's
reviewed decisions). The labelled sample stands in for them until there are enough: its invoices
are decided by the same path as a batch (context, router, guardrails, factors) against
the sample's own ERP snapshot, and each decision is scored against its label.
"""

import tempfile
from pathlib import Path

import dagster as dg

from assets.invoices import sample_data
from assets.invoices.context import assemble_context
from assets.invoices.decisions import calibrator_path, guard, invoice_policy, model_group
from assets.invoices.erp import ERPResource
from assets.invoices.feedback import invoice_local_model, local_outcomes, reviewed_examples
from assets.invoices.reasoning import propose
from assets.invoices.training import as_inbox_events, read_events, seed_erp
from assets.invoices.workflow import MODEL_NAME, WORKFLOW
from orchestration import settings
from orchestration.confidence import Calibrator, fit_and_report
from orchestration.db import dispose
from orchestration.lineage import layer_group
from resources.chat_model import ChatModel
from resources.database import BosunDatabase
from resources.local_model import LocalModel

MAX_ECE = 0.05


def reviewed_outcomes(directory: Path, local_model: LocalModel, llm: ChatModel, ledger=None, routing=None):
    """(stated probability, correct, model group) for every decision a model (not a hard
    rule) took."""
    labels = sample_data.load_labels(directory)
    events = as_inbox_events(read_events(directory / "invoices.jsonl"))
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'erp.db'}"
        erp = ERPResource(url=url)
        seed_erp(erp, directory)
        contexts = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, index=None)
        dispose(url)
    proposals, _ = propose(contexts, local_model, llm, ledger, routing)
    policy = invoice_policy()
    guard(proposals, policy)
    by_key = {e.key: e.envelope.id for e in events}
    conf, correct, groups = [], [], []
    for p in proposals:
        if p["guardrails"]["blocked_by"] or p["decision"] == "no_result":
            continue
        conf.append(p["probability"])
        correct.append(p["decision"] == labels[by_key[p["key"]]]["label"])
        groups.append(model_group(p))
    return conf, correct, groups


def fit_calibrator(
    directory: Path,
    local_model: LocalModel,
    llm: ChatModel,
    ledger=None,
    routing=None,
    reviewed: tuple[list, list, list] | None = None,
) -> Calibrator:
    """`reviewed`: (probability, correct, group) of decisions reviewers labelled, added to
    the sample's stand-in outcomes."""
    conf, correct, groups = reviewed_outcomes(Path(directory), local_model, llm, ledger, routing)
    if reviewed is not None:
        conf, correct, groups = conf + list(reviewed[0]), correct + list(reviewed[1]), groups + list(reviewed[2])
    if len(conf) < 50:
        raise ValueError(f"only {len(conf)} reviewed outcomes in {directory}; need at least 50 to calibrate")
    return fit_and_report(conf, correct, groups)


@dg.asset(
    group_name=layer_group(WORKFLOW, "decision"),
    kinds={"sklearn"},
    # After a retrained model is promoted, its probabilities need a calibrator of their own.
    deps=[invoice_local_model],
    check_specs=[
        dg.AssetCheckSpec(
            "calibration_error_is_below_limit",
            asset="invoice_confidence_calibrator",
            description=f"Expected calibration error after calibration < {MAX_ECE}, "
            "measured on held-out reviewed outcomes.",
        )
    ],
)
def invoice_confidence_calibrator(local_model: LocalModel, llm: ChatModel, bosun_db: BosunDatabase):
    """Isotonic map per model from stated probability to the observed rate of correct decisions;
    every batch's decisions load the latest one and record its version."""
    reviewed = local_outcomes(local_model, reviewed_examples(bosun_db.resolved_url)["examples"])
    calibrator = fit_calibrator(settings.sample_dir(), local_model, llm, bosun_db.llm_ledger(), reviewed=reviewed)
    calibrator.save(calibrator_path(local_model))
    r = calibrator.report
    yield dg.MaterializeResult(
        metadata={
            "version": calibrator.version,
            "examples": r["examples"],
            "reviewed_outcomes": len(reviewed[0]),
            "model_version": local_model.version(MODEL_NAME) or "none",
            "accuracy": r["accuracy"],
            "ece_before": r["ece_before"],
            "ece_after": r["ece_after"],
        }
    )
    yield dg.AssetCheckResult(
        check_name="calibration_error_is_below_limit",
        passed=r["ece_after"] < MAX_ECE,
        metadata={"ece_after": r["ece_after"], "ece_before": r["ece_before"], "limit": MAX_ECE},
    )
