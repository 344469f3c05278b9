"""Context layer of the invoice workflow: ERP snapshots, the policy index, and the
per-batch context each decision is made from."""


import hashlib
import json
import math
from datetime import timedelta
from decimal import Decimal

import dagster as dg
import pandas as pd

from guardrails.input_guards import guard_text
from orchestration.batching import BatchRange
from orchestration.delivery import triage
from orchestration.inbox import InboxEvent
from resources.database import BosunDatabase
from resources.erp import ERPResource
from resources.knowledge_base import PolicyDocuments, PolicyIndex

from assets.invoices.workflow import EVENT_TYPES, WORKFLOW, delivery_policies, invoice_batches

CONTEXT_GROUP = "invoice_context"

# Master data changes slowly: a day-old snapshot is fine, two days is a problem.
_daily = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=26))


@dg.asset(group_name=CONTEXT_GROUP, freshness_policy=_daily, kinds={"sql", "pandas"})
def vendors(erp: ERPResource) -> dg.Output[pd.DataFrame]:
    """Snapshot of the ERP's vendors: risk tier, active flag, currency."""
    df = erp.vendors_frame()
    return dg.Output(df, metadata={"rows": len(df), "active": int(df["active"].sum()) if len(df) else 0,
                                   "by_risk_tier": dg.MetadataValue.json(df["risk_tier"].value_counts().to_dict())})


@dg.asset(group_name=CONTEXT_GROUP, freshness_policy=_daily, kinds={"sql", "pandas"})
def purchase_orders(erp: ERPResource) -> dg.Output[pd.DataFrame]:
    """Snapshot of the ERP's purchase orders (amounts as Decimal)."""
    df = erp.purchase_orders_frame()
    return dg.Output(df, metadata={"rows": len(df), "open": int((df["status"] == "open").sum()) if len(df) else 0})


@dg.asset(group_name=CONTEXT_GROUP, freshness_policy=_daily, kinds={"bm25"})
def policy_index(policy_documents: PolicyDocuments) -> dg.Output[PolicyIndex]:
    """BM25 index over the approval-policy documents, one entry per paragraph."""
    index = PolicyIndex(policy_documents.load())
    return dg.Output(index, metadata={"passages": len(index.passages), "version": index.version})


@dg.asset(partitions_def=invoice_batches, group_name="invoice_workflow", kinds={"python"})
def invoice_context(context: dg.AssetExecutionContext, bosun_db: BosunDatabase, erp: ERPResource,
                    vendors: pd.DataFrame, purchase_orders: pd.DataFrame,
                    policy_index: PolicyIndex) -> dg.Output[list[dict]]:
    """For each invoice in the batch: vendor, PO, prior payments, guarded memo and the
    top policy passages, with the facts the guardrails and the model read."""
    batch = BatchRange.parse(context.partition_key)
    inbox = bosun_db.inbox()
    events = inbox.events_between(batch.first, batch.last, EVENT_TYPES)
    triaged = triage(inbox, events, delivery_policies, lock_name=WORKFLOW, batch_id=context.partition_key)
    records = assemble_context(triaged.kept, vendors, purchase_orders, erp, policy_index)
    return dg.Output(records, metadata={
        "events": len(records),
        "content_duplicates": triaged.counts["duplicate"], "debounced": triaged.counts["debounced"],
        "stale_ignored": triaged.counts["stale"], "stale_processed": triaged.counts["stale_processed"],
        "unknown_vendors": sum(not r["facts"]["vendor_known"] for r in records),
        "already_paid": sum(r["facts"]["already_paid"] for r in records),
        "pii_redacted": sum(bool(r["pii_found"]) for r in records),
        "injection_suspected": sum(r["facts"]["injection_suspected"] for r in records),
        "policy_index_version": policy_index.version,
    })


def action_key(event_key: str, step: str) -> str:
    """The idempotency key of one action on one event: replays reuse it, so act once."""
    return f"{step}:{event_key}"


def assemble_context(events: list[InboxEvent], vendors_df: pd.DataFrame, pos_df: pd.DataFrame,
                     erp: ERPResource, index: PolicyIndex | None) -> list[dict]:
    # Entities are processed in occurred_at order so "first copy wins" means the earliest.
    events = sorted(events, key=lambda e: (e.envelope.occurred_at, e.seq))
    vendor_by_id = {r["vendor_id"]: r for r in vendors_df.to_dict("records")}
    po_by_number = {r["po_number"]: r for r in pos_df.to_dict("records")}
    payloads = [e.envelope.payload for e in events]
    paid = erp.paid_invoices(sorted({p["invoice_id"] for p in payloads}))
    paid_po = erp.paid_per_po(sorted({p["po_number"] for p in payloads}))
    seen_invoices: set[tuple[str, str]] = set()
    committed_po: dict[str, Decimal] = {}
    plain: dict[tuple[str, str], dict | None] = {}  # a vendor or PO row, made JSON-ready once per batch
    records = []
    for ev, p in zip(events, payloads):
        inv = (p["vendor_id"], p["invoice_id"])
        own_payment = action_key(ev.key, "schedule_payment")
        paid_elsewhere = [k for k in paid.get(inv, []) if k != own_payment]
        vendor = vendor_by_id.get(p["vendor_id"])
        po = po_by_number.get(p["po_number"])
        amount = Decimal(p["amount"])
        memo = guard_text(p.get("note") or "")
        facts = _facts(p, amount, vendor, po, paid_po, committed_po, bool(paid_elsewhere) or inv in seen_invoices, memo)
        seen_invoices.add(inv)
        if po is not None and not facts["already_paid"]:
            # Conservatively count earlier invoices in this batch against the PO's remainder.
            committed_po[p["po_number"]] = committed_po.get(p["po_number"], Decimal(0)) + amount
        records.append({
            "key": ev.key, "seq": ev.seq, "event_id": ev.envelope.id, "entity_key": ev.envelope.entity_key,
            "event": _event_reference(ev),
            "occurred_at": ev.envelope.occurred_at.isoformat(), "invoice": {**p, "note": memo.text},
            "vendor": _plain_once(plain, "vendor", p["vendor_id"], vendor),
            "purchase_order": _plain_once(plain, "po", p["po_number"], po), "prior_payments": paid_elsewhere,
            "pii_found": memo.pii_found, "injection_signals": memo.injection_signals, "facts": facts,
        })
    if index is not None:
        _attach_policy_passages(records, index)
    for r in records:
        r["context_hash"] = hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return records


def _event_reference(ev: InboxEvent) -> dict:
    """What the audit needs to tie a decision to its event, without copying personal data."""
    env = ev.envelope
    digest = hashlib.sha256(json.dumps(env.payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"source": env.source, "id": env.id, "type": env.type, "schema_version": env.schema_version,
            "occurred_at": env.occurred_at.isoformat(), "payload_sha256": digest}


def _facts(p, amount, vendor, po, paid_po, committed_po, already_paid, memo) -> dict:
    remaining = None
    if po is not None:
        remaining = po["amount"] - paid_po.get(p["po_number"], Decimal(0)) - committed_po.get(p["po_number"], Decimal(0))
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
        "injection_suspected": memo.injection_suspected,
        "pii_in_memo": bool(memo.pii_found),
    }


def model_features(facts: dict) -> dict:
    """The local model's view of the facts: numbers it can weigh, categories one-hot."""
    ratio = facts["amount_over_po_ratio"]
    return {
        "vendor_known": float(facts["vendor_known"]), "vendor_active": float(facts["vendor_active"]),
        f"risk={facts['risk_tier']}": 1.0, "po_found": float(facts["po_found"]),
        "po_open": float(facts["po_open"]), "currency_matches_po": float(facts["currency_matches_po"]),
        "over_po": float(ratio is not None and ratio > 0.02),
        "over_po_ratio": max(-1.0, min(ratio, 2.0)) if ratio is not None else 0.0,
        "log_amount": math.log10(max(facts["amount"], 1.0)),
        "already_paid": float(facts["already_paid"]), "injection": float(facts["injection_suspected"]),
    }


def _attach_policy_passages(records: list[dict], index: PolicyIndex, k: int = 3) -> None:
    queries = []
    for r in records:
        f = r["facts"]
        words = ["invoice approval"]
        if not f["vendor_known"]:
            words.append("unknown vendor")
        if f["already_paid"]:
            words.append("duplicate invoice paid")
        if not f["currency_matches_po"]:
            words.append("currency purchase order")
        if (f["amount_over_po_ratio"] or 0) > 0:
            words.append("amount exceeds purchase order tolerance review")
        if f["amount"] > 50000:
            words.append("second approver large amount")
        if f["injection_suspected"]:
            words.append("instructions memo")
        queries.append(" ".join(words))
    for r, hits in zip(records, index.search_many(queries, k=k)):
        r["policy_passages"] = [{"doc": p.doc, "heading": p.heading, "score": round(s, 3)} for p, s in hits]


def _plain_once(cache: dict, kind: str, key: str, row: dict | None) -> dict | None:
    if (kind, key) not in cache:
        cache[(kind, key)] = None if row is None else {
            k: (str(v) if isinstance(v, Decimal) or hasattr(v, "isoformat") else
                v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    return cache[(kind, key)]
