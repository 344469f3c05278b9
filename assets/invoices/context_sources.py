"""Where an invoice decision's context comes from, read once per batch per source.

Vendors and purchase orders are read live from the ERP for the batch's keys, falling back
to the last snapshot asset (stale, with its age and its freshness policy's verdict);
prior payments are read live and have no snapshot, so when the ERP cannot answer they
are missing. Each degradation becomes a quality factor on every record that used the
source, and disagreements between the live ERP and the snapshot are recorded conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from assets.invoices.erp import ERPResource
from orchestration.context.conflicts import Claim, ConflictRule, live_vs_snapshot, recency_rules, resolve
from orchestration.context.freshness import FreshnessWindow
from orchestration.context.sources import LIVE, Snapshot, SourceReading, rows_by, snapshot_rows
from resources.context_sources import ContextSources

# How much a degraded source lowers confidence: a stale snapshot by its policy's verdict,
# a missing one most (without payments a duplicate cannot be ruled out).
STALE_PENALTY = {"fresh": 0.05, "warn": 0.15, "fail": 0.3, "unknown": 0.3}
MISSING_PENALTY = 0.35

# The ERP is the system of record; a live read is newer than any snapshot of it.
VENDOR_FIELDS = ("active", "risk_tier", "currency", "iban")
PO_FIELDS = ("vendor_id", "amount", "currency", "status")
RECENCY_RULES = recency_rules("vendor", VENDOR_FIELDS) | recency_rules("purchase_order", PO_FIELDS)
# Bank details come from the vendor master only (policy: vendor-master-data.md#Bank details).
BANK_RULE = ConflictRule(
    "vendor.bank_account", "source_priority", priority=("erp.vendors", "invoice.memo"), matters=False
)
# Header and lines are the same document: nothing says which one is right.
AMOUNT_RULE = ConflictRule("invoice.amount", "must_agree", tolerance=0.01, penalty=0.3)
RULES = {**RECENCY_RULES, AMOUNT_RULE.field: AMOUNT_RULE, BANK_RULE.field: BANK_RULE}


@dataclass
class BatchSources:
    vendor_by_id: dict[str, dict]
    po_by_number: dict[str, dict]
    paid: dict
    paid_po: dict
    readings: dict[str, SourceReading]
    conflicts: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (kind, key) -> conflicts

    def describe(self) -> dict[str, dict]:
        return {name: r.describe() for name, r in self.readings.items()}


def read_batch_sources(
    payloads: list[dict],
    erp: ERPResource,
    sources: ContextSources,
    snapshots: dict[str, Snapshot],
    windows: dict[str, FreshnessWindow | None],
) -> BatchSources:
    vendor_ids = sorted({p["vendor_id"] for p in payloads})
    po_numbers = sorted({p["po_number"] for p in payloads})
    invoice_ids = sorted({p["invoice_id"] for p in payloads})
    breaker = sources.breaker()
    # The snapshots' rows for this batch's keys, built once.
    snaps = {
        "vendors": snapshot_rows(snapshots.get("vendors"), "vendor_id", vendor_ids),
        "purchase_orders": snapshot_rows(snapshots.get("purchase_orders"), "po_number", po_numbers),
    }
    readings = {
        "vendors": sources.read(
            "vendors",
            lambda: rows_by(erp.vendors_by_id(vendor_ids), "vendor_id"),
            snaps["vendors"],
            windows.get("vendors"),
            breaker,
        ),
        "purchase_orders": sources.read(
            "purchase_orders",
            lambda: rows_by(erp.purchase_orders_by_number(po_numbers), "po_number"),
            snaps["purchase_orders"],
            windows.get("purchase_orders"),
            breaker,
        ),
        "payments": sources.read(
            "payments", lambda: (erp.paid_invoices(invoice_ids), erp.paid_per_po(po_numbers)), None, None, breaker
        ),
    }
    paid, paid_po = readings["payments"].value or ({}, {})
    out = BatchSources(
        readings["vendors"].value or {}, readings["purchase_orders"].value or {}, paid, paid_po, readings
    )
    for name, kind, fields in (("vendors", "vendor", VENDOR_FIELDS), ("purchase_orders", "purchase_order", PO_FIELDS)):
        if readings[name].status == LIVE and snaps[name] is not None:
            for key, found in live_vs_snapshot(kind, "erp", readings[name], snaps[name], fields).items():
                out.conflicts[(kind, key)] = found
    return out


def record_conflicts(sources: BatchSources, payload: dict, vendor: dict | None, pii_found: list[str]) -> list[dict]:
    conflicts = list(sources.conflicts.get(("vendor", payload["vendor_id"]), []))
    conflicts += sources.conflicts.get(("purchase_order", payload["po_number"]), [])
    lines = sum(float(li["quantity"]) * float(li["unit_price"]) for li in payload.get("line_items", []))
    c = resolve(
        AMOUNT_RULE, [Claim("invoice.header", float(payload["amount"])), Claim("invoice.line_items", round(lines, 2))]
    )
    if c:
        conflicts.append(c)
    if "iban" in pii_found and vendor is not None and vendor.get("iban"):
        conflicts.append(
            resolve(
                BANK_RULE,
                [
                    Claim("erp.vendors", f"IBAN ending {str(vendor['iban'])[-4:]}"),
                    Claim("invoice.memo", "another IBAN quoted in the memo (redacted)"),
                ],
            )
        )
    return conflicts
