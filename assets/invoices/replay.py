"""Replay of the invoice workflow's decisions (`bosun replay`): the contexts rebuilt from the
audit's decision records, re-decided by the decision layer with another prompt version or
model. Nothing is written: no LLM ledger (cache, spend), no saga, no inbox, no audit.

`model`: None keeps the workflow's routing (local first, the LLM for the unsure);
"local" decides everything with the local model; any other name sends every decision the
routing rules allow (quarantined text never) to the configured LLM under that model name
(orchestration/audit/replay.py). The prompt only matters to decisions an LLM makes.
"""

from __future__ import annotations

from typing import Optional

from assets.invoices.decisions import calibrator_path, decide
from assets.invoices.reasoning import DECISION_KINDS, PROMPT_PATH
from assets.invoices.workflow import EVENT_TYPES, ROUTING, WORKFLOW
from orchestration.audit.replay import (
    ReplayHook,
    recorded_context,
    replay_contexts,
    replay_llm,
    replay_outcome,
    replay_routing,
    resolve_prompt,
)
from orchestration.core import settings
from orchestration.decision.confidence import Calibrator
from orchestration.decision.prompts import prompt_versions
from resources.knowledge_base import PolicyIndex


def context_from_record(rec: dict, passage_text: dict[tuple[str, str], str]) -> dict:
    """The context record the decision layer reads, as the audit kept it: the engine's fields
    and the invoice's (what is known of its vendor, purchase order and payments)."""
    used = rec.get("context_used") or {}
    return {
        **recorded_context(rec, passage_text, "invoice"),
        "vendor": {} if used.get("vendor_known") else None,
        "purchase_order": {"amount": used["po_amount"]} if used.get("po_amount") is not None else None,
        "prior_payments": used.get("prior_payments") or [],
        "pii_found": used.get("pii_redacted") or [],
    }


def redecide(records: list[dict], prompt_version: Optional[str], model: Optional[str], resources: dict) -> list[dict]:
    prompt = resolve_prompt(prompt_version, prompt_versions(PROMPT_PATH))
    llm = replay_llm(resources["llm"], model)
    index = PolicyIndex(resources["policy_documents"].load())
    contexts = replay_contexts(records, index, context_from_record)
    local_model = resources["local_model"]
    # The decision loop as a batch runs it, except that the ERP is not read again (the audit
    # kept what the decision was made from; only the policies are searched more broadly). No
    # ledger: a replay neither reads nor fills the response cache, nor spends the budget.
    decided = decide(
        contexts,
        local_model,
        llm,
        ledger=None,
        index=index,
        calibrator=Calibrator.load(calibrator_path(local_model)),
        routing=replay_routing(ROUTING, model, DECISION_KINDS),
        prompt=prompt,
    )
    return [replay_outcome(d) for d in decided]


def sample_labels() -> dict[str, str]:
    from assets.invoices.sample_data import load_labels

    try:
        return {k: v["label"] for k, v in load_labels(settings.sample_dir()).items()}
    except FileNotFoundError:
        return {}


def replayable(record: dict) -> bool:
    return "facts" in record and "invoice" in record


hook = ReplayHook(WORKFLOW, tuple(EVENT_TYPES), redecide, sample_labels, replayable)
