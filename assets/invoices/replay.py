"""Replay of the invoice workflow's decisions (`bosun replay`): the contexts rebuilt from the
audit's decision records, re-decided by the decision layer with another prompt version or
model. Nothing is written: no LLM ledger (cache, spend), no saga, no inbox, no audit.

`model`: None keeps the workflow's routing (local first, the LLM for the unsure);
"local" decides everything with the local model; any other name sends every decision the
routing rules allow (quarantined text never) to the configured LLM under that model name.
The prompt only matters to decisions an LLM makes.
"""

from __future__ import annotations

from typing import Optional

from assets.invoices.decisions import calibrator_path, decide
from assets.invoices.reasoning import prompt_versions
from assets.invoices.workflow import EVENT_TYPES, ROUTING, WORKFLOW
from orchestration.audit.replay import ReplayHook
from orchestration.core import settings
from orchestration.decision.confidence import Calibrator
from resources.knowledge_base import PolicyIndex


class ReplayError(ValueError):
    pass


def resolve_prompt(version: Optional[str]):
    if version is None:
        return None
    found = prompt_versions()
    if version not in found:
        raise ReplayError(f"unknown prompt version {version!r}; known: {', '.join(sorted(found))}")
    return found[version]


def context_from_record(rec: dict, passage_text: dict[tuple[str, str], str]) -> dict:
    """The context record the decision layer reads, as the audit kept it (texts redacted;
    policy passages' text from the current documents, by document and heading)."""
    if "facts" not in rec or "invoice" not in rec:
        raise ReplayError("decision record without facts and input: recorded before replay was possible")
    used = rec.get("context_used") or {}
    passages = [
        {**p, "text": passage_text.get((p.get("doc"), p.get("heading")), "")} for p in used.get("policy_passages") or []
    ]
    return {
        "key": None,
        "entity_key": rec.get("entity_key"),
        "context_hash": rec.get("context_hash"),
        "event": rec.get("event"),
        "facts": rec["facts"],
        "invoice": rec["invoice"],
        "vendor": {} if used.get("vendor_known") else None,
        "purchase_order": {"amount": used["po_amount"]} if used.get("po_amount") is not None else None,
        "prior_payments": used.get("prior_payments") or [],
        "pii_found": used.get("pii_redacted") or [],
        "guarded": used.get("guarded") or {},
        "policy_passages": passages,
        "sources": used.get("sources") or {},
        "conflicts": used.get("conflicts") or [],
        "quality_factors": used.get("quality_factors") or [],
        "knowledge": used.get("knowledge") or {},
        "assembly": used.get("assembly") or {},
    }


def _routing_for(model: Optional[str]):
    if model is None:
        return ROUTING
    if model == "local":
        return ROUTING.model_copy(update={"threshold": 0.0, "force": {}})
    return ROUTING.model_copy(
        update={"threshold": 1.0, "force": {"standard": "llm", "large_amount": "llm", "quarantined_text": "local"}}
    )


def redecide(records: list[dict], prompt_version: Optional[str], model: Optional[str], resources: dict) -> list[dict]:
    prompt = resolve_prompt(prompt_version)
    llm = resources["llm"]
    if model not in (None, "local"):
        if not llm.enabled:
            raise ReplayError(f"model {model!r} is an LLM, and none is configured (OPENAI_BASE_URL / OPENAI_API_KEY)")
        llm = llm.model_copy(update={"model": model})
    index = PolicyIndex(resources["policy_documents"].load())
    text = {(p.doc, p.heading): p.text for p in index.passages}
    contexts = []
    for i, rec in enumerate(records):
        c = context_from_record(rec, text)
        c["key"] = f"replay:{i}"  # position, not the event: nothing downstream may key on it
        contexts.append(c)
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
        routing=_routing_for(model),
        prompt=prompt,
    )
    return [
        {
            "decision": d["final_decision"],
            "route": d["route"],
            "confidence": d["confidence"],
            "model": d["model"],
            "model_version": d["model_version"],
            "prompt_version": d["prompt_version"],
        }
        for d in decided
    ]


def sample_labels() -> dict[str, str]:
    from assets.invoices.sample_data import load_labels

    try:
        return {k: v["label"] for k, v in load_labels(settings.sample_dir()).items()}
    except FileNotFoundError:
        return {}


def replayable(record: dict) -> bool:
    return "facts" in record and "invoice" in record


hook = ReplayHook(WORKFLOW, tuple(EVENT_TYPES), redecide, sample_labels, replayable)
