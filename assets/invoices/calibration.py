"""The confidence calibrator of the invoice decisions (the engine's asset,
orchestration/decision/feedback_assets.py), with the invoice workflow's stand-in for reviewed outcomes:
the labelled sample's invoices decided by the same path as a batch (context, router,
guardrails, factors) against the sample's own ERP snapshot, each scored against its label.
"""

import tempfile
from pathlib import Path

from assets.invoices import sample_data
from assets.invoices.context import assemble_context
from assets.invoices.decisions import calibrator_path, decision_spec
from assets.invoices.erp import ERPResource
from assets.invoices.feedback import feedback_loop
from assets.invoices.reasoning import propose
from assets.invoices.training import as_inbox_events, read_events, seed_erp
from orchestration.core.db import dispose
from orchestration.decision import feedback_assets
from orchestration.decision.batch import guard
from orchestration.decision.confidence import Calibrator
from orchestration.decision.feedback_assets import Outcomes, build_calibrator_asset
from resources.chat_model import ChatModel
from resources.local_model import LocalModel

MAX_ECE = 0.05


def reviewed_outcomes(directory: Path, local_model: LocalModel, llm: ChatModel, ledger=None, routing=None) -> Outcomes:
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
    spec = decision_spec()
    guard(proposals, spec)
    by_key = {e.key: e.envelope.id for e in events}
    conf, correct, groups = [], [], []
    for p in proposals:
        if p["guardrails"]["blocked_by"] or p["decision"] == "no_result":
            continue
        conf.append(p["probability"])
        correct.append(p["decision"] == labels[by_key[p["key"]]]["label"])
        groups.append(spec.group(p))
    return conf, correct, groups


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
