"""The confidence calibrator of the invoice decisions (the engine's asset,
orchestration/decision/feedback_assets.py), with the invoice workflow's stand-in for reviewed outcomes:
the labelled sample's invoices decided by the same path as a batch (context, router,
guardrails, factors) against the sample's own ERP snapshot, each scored against its label.
"""

from pathlib import Path

from assets.invoices.context import assemble_context
from assets.invoices.decisions import calibrator_path, decision_spec
from assets.invoices.feedback import feedback_loop
from assets.invoices.reasoning import propose
from assets.invoices.training import labelled_events, scratch_erp
from orchestration.decision import feedback_assets
from orchestration.decision.confidence import Calibrator
from orchestration.decision.feedback_assets import Outcomes, build_calibrator_asset
from orchestration.decision.sample_training import guarded_outcomes
from resources.chat_model import ChatModel
from resources.local_model import LocalModel

MAX_ECE = 0.05


def reviewed_outcomes(directory: Path, local_model: LocalModel, llm: ChatModel, ledger=None, routing=None) -> Outcomes:
    """(stated probability, correct, model group) for every decision a model (not a hard
    rule) took."""
    events, labels = labelled_events(directory)
    with scratch_erp(directory) as erp:
        contexts = assemble_context(events, erp.vendors_frame(), erp.purchase_orders_frame(), erp, index=None)
    proposals, _ = propose(contexts, local_model, llm, ledger, routing)
    return guarded_outcomes(proposals, decision_spec(), labels)


def fit_calibrator(
    directory: Path,
    local_model: LocalModel,
    llm: ChatModel,
    ledger=None,
    routing=None,
    reviewed: Outcomes | None = None,
) -> Calibrator:
    """`reviewed`: (probability, correct, group) of decisions reviewers labelled, added to
    the sample's stand-in outcomes."""
    stand_in = reviewed_outcomes(Path(directory), local_model, llm, ledger, routing)
    return feedback_assets.fit_calibrator(stand_in, reviewed, source=directory)


invoice_confidence_calibrator = build_calibrator_asset(
    feedback_loop,
    stand_in=lambda sample, r: reviewed_outcomes(sample, r["local_model"], r["llm"], r["bosun_db"].llm_ledger()),
    path=calibrator_path,
    resource_keys={"llm"},
    max_ece=MAX_ECE,
)
