"""Context layer of the invoice workflow: ERP snapshots, the policy index, and the
per-batch context each decision is made from."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import dagster as dg

from assets.invoices.assembly import assemble_records
from assets.invoices.context_sources import MISSING_PENALTY, RULES, STALE_PENALTY, read_batch_sources, record_conflicts
from assets.invoices.erp import ERPResource
from assets.invoices.knowledge import LABELS_PATH, QUESTIONS, RECALL_AT_5_THRESHOLD
from assets.invoices.workflow import WORKFLOW, registry
from guardrails.untrusted import guard_payload
from orchestration.action.batch import action_key
from orchestration.context.conflicts import conflict_factors
from orchestration.context.figures import context_figures
from orchestration.context.frame import BatchFrame, base_record, context_hash, plain_once
from orchestration.context.freshness import materialized_at, window_of_asset
from orchestration.context.knowledge import (
    attach_knowledge,
    build_knowledge_index_asset,
    embed_of,
    read_knowledge,
    retrieval_cache,
)
from orchestration.context.sources import DataFrame, Snapshot, SourceReading, source_quality_factors
from orchestration.context.tokens import TokenCounter, counter_for, reader_model
from orchestration.core.batch_assets import StepCall
from orchestration.core.lineage import layer_group
from orchestration.trigger.inbox import InboxEvent
from resources.context_sources import ContextSources
from resources.knowledge_base import PolicyIndex

if TYPE_CHECKING:
    import pandas as pd

CONTEXT_GROUP = layer_group(WORKFLOW, "context")
# Master data changes slowly: a day-old snapshot is fine, two days is a problem.
_daily = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=26))


@dg.asset(group_name=CONTEXT_GROUP, freshness_policy=_daily, kinds={"sql", "pandas"}, dagster_type=DataFrame)
def vendors(erp: ERPResource) -> dg.Output:
    """Snapshot of the ERP's vendors: risk tier, active flag, currency."""
    df = erp.vendors_frame()
    return dg.Output(
        df,
        metadata={
            "rows": len(df),
            "active": int(df["active"].sum()) if len(df) else 0,
            "by_risk_tier": dg.MetadataValue.json(df["risk_tier"].value_counts().to_dict()),
        },
    )


@dg.asset(group_name=CONTEXT_GROUP, freshness_policy=_daily, kinds={"sql", "pandas"}, dagster_type=DataFrame)
def purchase_orders(erp: ERPResource) -> dg.Output:
    """Snapshot of the ERP's purchase orders (amounts as Decimal)."""
    df = erp.purchase_orders_frame()
    return dg.Output(df, metadata={"rows": len(df), "open": int((df["status"] == "open").sum()) if len(df) else 0})


policy_index = build_knowledge_index_asset(
    "policy_index",
    CONTEXT_GROUP,
    LABELS_PATH,
    RECALL_AT_5_THRESHOLD,
    freshness_policy=_daily,
    description="BM25 index over the approval-policy documents, one entry per paragraph (plus their embeddings "
    "when an endpoint is configured). Its data version is the hash of the documents.",
)
policy_index_asset = policy_index


def assemble(call: StepCall, frame: BatchFrame) -> list[dict]:
    """The batch step of the context layer (orchestration/core/batch_assets.py): for each invoice,
    vendor, PO, prior payments, its guarded free text, the policy passages its questions need,
    the facts the guardrails and the model read, and the document assembled within the token
    budget, with every source's state and age."""
    r, inputs = call.resources, call.inputs
    policy_index = inputs["policy_index"]
    as_of = {
        name: materialized_at(call.context.instance, name) for name in ("vendors", "purchase_orders", "policy_index")
    }
    knowledge = read_knowledge(
        r["context_sources"],
        policy_index,
        r["policy_documents"],
        r["policy_embeddings"],
        as_of["policy_index"],
        window_of_asset(policy_index_asset),
    )
    cache_before = retrieval_cache.stats()
    records = assemble_context(
        frame.events,
        inputs["vendors"],
        inputs["purchase_orders"],
        r["erp"],
        knowledge.value,
        sources=r["context_sources"],
        snapshot_times={"vendors": as_of["vendors"], "purchase_orders": as_of["purchase_orders"]},
        knowledge=knowledge,
        counter=counter_for(reader_model(r["llm"])),
        embed=embed_of(r["policy_embeddings"]),
    )
    call.metadata.update(context_metadata(records, knowledge.value, cache_before))
    call.metadata["policy_index_rebuilt"] = knowledge.value is not None and knowledge.value is not policy_index
    return records


CONTEXT_INS = {name: dg.AssetIn() for name in ("vendors", "purchase_orders", "policy_index")}
CONTEXT_RESOURCES = frozenset({"erp", "context_sources", "policy_documents", "llm", "policy_embeddings"})


def assemble_context(
    events: list[InboxEvent],
    vendors_df: pd.DataFrame,
    pos_df: pd.DataFrame,
    erp: ERPResource,
    index: PolicyIndex | None,
    sources: ContextSources | None = None,
    snapshot_times: dict | None = None,
    knowledge: SourceReading | None = None,
    counter: TokenCounter | None = None,
    embed=None,
) -> list[dict]:
    """One context record per event. Every source is read once for the whole batch."""
    sources = sources or ContextSources()
    snapshot_times = snapshot_times or {}
    # Entities are processed in occurred_at order so "first copy wins" means the earliest.
    events = sorted(events, key=lambda e: (e.envelope.occurred_at, e.seq))
    payloads = [e.envelope.payload for e in events]
    batch = read_batch_sources(
        payloads,
        erp,
        sources,
        snapshots={
            "vendors": Snapshot(vendors_df, snapshot_times.get("vendors")),
            "purchase_orders": Snapshot(pos_df, snapshot_times.get("purchase_orders")),
        },
        windows={"vendors": window_of_asset(vendors), "purchase_orders": window_of_asset(purchase_orders)},
    )
    if knowledge is None and index is not None:
        knowledge = SourceReading("knowledge", index, "live", None, 0.0, "fresh")
    if knowledge is not None:
        batch.readings["knowledge"] = knowledge
        index = knowledge.value
    factors = source_quality_factors(batch.readings, STALE_PENALTY, MISSING_PENALTY)
    described = batch.describe()
    seen_invoices: set[tuple[str, str]] = set()
    committed_po: dict[str, Decimal] = {}
    plain: dict[tuple[str, str], dict | None] = {}  # a vendor or PO row, made JSON-ready once per batch
    records = []
    for ev, p in zip(events, payloads):
        inv = (p["vendor_id"], p["invoice_id"])
        own_payment = action_key(ev.key, "schedule_payment")
        paid_elsewhere = [k for k in batch.paid.get(inv, []) if k != own_payment]
        vendor = batch.vendor_by_id.get(p["vendor_id"])
        po = batch.po_by_number.get(p["po_number"])
        amount = Decimal(p["amount"])
        # Every field the payload model declares untrusted (the note, each line item's
        # description) is guarded here, once: what follows (the model, the audit) reads the copy.
        guarded = guard_payload(registry.model_for(ev.envelope.type, ev.envelope.schema_version), p)
        # A re-run after a crash finds the event's own payment already scheduled: it is in the
        # PO's paid total, and must not count against the invoice that made it.
        own_paid = own_payment in batch.paid.get(inv, [])
        paid_po = (
            batch.paid_po
            if not own_paid
            else {**batch.paid_po, p["po_number"]: batch.paid_po.get(p["po_number"], Decimal(0)) - amount}
        )
        seen_before = inv in seen_invoices
        facts = _facts(
            p,
            amount,
            vendor,
            po,
            paid_po,
            committed_po,
            bool(paid_elsewhere) or seen_before,
            guarded.injection_suspected,
            guarded.pii_found,
        )
        # What this invoice's facts owe to the rest of the batch, so a re-read of its sources
        # (decision_loop's "more context") keeps counting the batch's earlier invoices.
        batch_state = {
            "po_paid": str(paid_po.get(p["po_number"], Decimal(0))),
            "po_committed": str(committed_po.get(p["po_number"], Decimal(0))),
            "seen_in_batch": seen_before,
        }
        seen_invoices.add(inv)
        if po is not None and not facts["already_paid"] and not own_paid:
            # Conservatively count earlier invoices in this batch against the PO's remainder.
            committed_po[p["po_number"]] = committed_po.get(p["po_number"], Decimal(0)) + amount
        conflicts = record_conflicts(batch, p, vendor, guarded.pii_found)
        records.append(
            {
                **base_record(ev),
                "invoice": guarded.payload,
                "vendor": plain_once(plain, "vendor", p["vendor_id"], vendor),
                "purchase_order": plain_once(plain, "po", p["po_number"], po),
                "prior_payments": paid_elsewhere,
                "pii_found": guarded.pii_found,
                "injection_signals": guarded.injection_signals,
                "guarded": guarded.summary(),
                "facts": facts,
                "sources": described,
                "conflicts": conflicts,
                "quality_factors": [*factors, *conflict_factors(conflicts, RULES)],
                "batch_state": batch_state,
            }
        )
    if index is not None:
        attach_knowledge(records, index, QUESTIONS, embed=embed)
    assemble_records(records, described, counter or counter_for("local"))
    for r in records:
        r["context_hash"] = context_hash(r)  # again in the batch step; here for direct callers
    return records


def context_metadata(records: list[dict], index: PolicyIndex | None, cache_before: dict) -> dict:
    """The batch's context in figures (the engine's, `context_figures`, plus the invoice's own
    counts); per-decision detail is in the audit (`bosun explain`)."""
    return {
        "events": len(records),
        "unknown_vendors": sum(not r["facts"]["vendor_known"] for r in records),
        "already_paid": sum(r["facts"]["already_paid"] for r in records),
        "pii_redacted": sum(bool(r["pii_found"]) for r in records),
        "injection_suspected": sum(r["facts"]["injection_suspected"] for r in records),
        "untrusted_fields_guarded": sum(r["guarded"]["fields_guarded"] for r in records),
        "quarantined_fields": sum(len(r["guarded"]["quarantined"]) for r in records),
        "policy_index_version": index.version if index is not None else None,
        **context_figures(records, cache_before),
    }


def _facts(p, amount, vendor, po, paid_po, committed_po, already_paid, injection_suspected, pii_found) -> dict:
    remaining = None
    if po is not None:
        remaining = (
            po["amount"] - paid_po.get(p["po_number"], Decimal(0)) - committed_po.get(p["po_number"], Decimal(0))
        )
    over_ratio = None
    if remaining is not None:
        over_ratio = float((amount - remaining) / remaining) if remaining > 0 else 10.0
    tier = vendor["risk_tier"] if vendor else "unknown"
    return {
        "vendor_known": vendor is not None,
        "vendor_active": bool(vendor["active"]) if vendor else False,
        "risk_tier": tier,
        "po_found": po is not None,
        "po_open": po is not None and po["status"] == "open",
        "po_vendor_matches": po is not None and po["vendor_id"] == p["vendor_id"],
        "currency_matches_po": po is not None and po["currency"] == p["currency"],
        "amount": float(amount),
        "amount_over_po_ratio": over_ratio,
        "high_risk_amount": float(amount) if tier == "high" else 0.0,
        "already_paid": already_paid,
        # From every untrusted field (note and line items), not only the note.
        "injection_suspected": injection_suspected,
        "pii_in_memo": bool(pii_found),
    }


def model_features(facts: dict) -> dict:
    """The local model's view of the facts: numbers it can weigh, categories one-hot."""
    ratio = facts["amount_over_po_ratio"]
    return {
        "vendor_known": float(facts["vendor_known"]),
        "vendor_active": float(facts["vendor_active"]),
        f"risk={facts['risk_tier']}": 1.0,
        "po_found": float(facts["po_found"]),
        "po_open": float(facts["po_open"]),
        "currency_matches_po": float(facts["currency_matches_po"]),
        "over_po": float(ratio is not None and ratio > 0.02),
        "over_po_ratio": max(-1.0, min(ratio, 2.0)) if ratio is not None else 0.0,
        "log_amount": math.log10(max(facts["amount"], 1.0)),
        "already_paid": float(facts["already_paid"]),
        "injection": float(facts["injection_suspected"]),
    }
