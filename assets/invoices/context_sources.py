"""Where an invoice decision's context comes from, read once per batch per source.

Vendors and purchase orders are read live from the ERP for the batch's keys, falling back
to the last snapshot asset (stale, with its age and its freshness policy's verdict);
prior payments are read live and have no snapshot, so when the ERP cannot answer they
are missing. Each degradation becomes a quality factor on every record that used the
source, and disagreements between the live ERP and the snapshot are recorded conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from assets.invoices.erp import ERPResource
from orchestration.context.conflicts import Claim, ConflictRule, resolve
from orchestration.context.freshness import FreshnessWindow
from orchestration.context.sources import LIVE, MISSING, Snapshot, SourceReading
from resources.context_sources import ContextSources

# How much a degraded source lowers confidence: a stale snapshot by its policy's verdict,
# a missing one most (without payments a duplicate cannot be ruled out).
STALE_PENALTY = {"fresh": 0.05, "warn": 0.15, "fail": 0.3, "unknown": 0.3}
MISSING_PENALTY = 0.35

# The ERP is the system of record; a live read is newer than any snapshot of it.
VENDOR_FIELDS = ("active", "risk_tier", "currency", "iban")
PO_FIELDS = ("vendor_id", "amount", "currency", "status")
RECENCY_RULES = {f"vendor.{f}": ConflictRule(f"vendor.{f}", "recency") for f in VENDOR_FIELDS} | {
    f"purchase_order.{f}": ConflictRule(f"purchase_order.{f}", "recency") for f in PO_FIELDS
}
# Bank details come from the vendor master only (policy: vendor-master-data.md#Bank details).
BANK_RULE = ConflictRule(
    "vendor.bank_account", "source_priority", priority=("erp.vendors", "invoice.memo"), matters=False
)
# Header and lines are the same document: nothing says which one is right.
AMOUNT_RULE = ConflictRule("invoice.amount", "must_agree", tolerance=0.01, penalty=0.3)


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

    made: dict[str, Snapshot | None] = {}

    def snap(name, key, keys):  # the snapshot's rows for this batch's keys, built once
        if name not in made:
            s = snapshots.get(name)
            made[name] = None if s is None else Snapshot(_rows_by(s.value[s.value[key].isin(keys)], key), s.as_of)
        return made[name]

    readings = {
        "vendors": sources.read(
            "vendors",
            lambda: _rows_by(erp.vendors_by_id(vendor_ids), "vendor_id"),
            snap("vendors", "vendor_id", vendor_ids),
            windows.get("vendors"),
            breaker,
        ),
        "purchase_orders": sources.read(
            "purchase_orders",
            lambda: _rows_by(erp.purchase_orders_by_number(po_numbers), "po_number"),
            snap("purchase_orders", "po_number", po_numbers),
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
        if readings[name].status == LIVE and snapshots.get(name) is not None:
            _live_vs_snapshot(
                out,
                kind,
                readings[name],
                snap(
                    name,
                    "vendor_id" if kind == "vendor" else "po_number",
                    vendor_ids if kind == "vendor" else po_numbers,
                ),
                fields,
            )
    return out


def source_factors(readings: dict[str, SourceReading]) -> list[dict]:
    """The quality factors of the batch's sources, the same for every record that used them."""
    factors = []
    for name, r in readings.items():
        if r.status == MISSING:
            factors.append(
                {
                    "name": f"missing_source:{name}",
                    "penalty": MISSING_PENALTY,
                    "detail": f"{r.error}; no snapshot to fall back to",
                }
            )
        elif r.status != LIVE:
            age = "unknown age" if r.age_s is None else f"{r.age_s / 3600:.1f} h old"
            factors.append(
                {
                    "name": f"stale_source:{name}",
                    "penalty": STALE_PENALTY[r.freshness],
                    "detail": f"{r.error}; using the snapshot of {r.as_of.isoformat() if r.as_of else '?'} "
                    f"({age}, freshness policy: {r.freshness})",
                }
            )
    return factors


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


def _live_vs_snapshot(out: BatchSources, kind: str, live: SourceReading, snapshot: Snapshot, fields) -> None:
    for key, row in live.value.items():
        old = snapshot.value.get(key)
        if old is None:
            continue
        for f in fields:
            c = resolve(
                RECENCY_RULES[f"{kind}.{f}"],
                [
                    Claim(f"erp.{kind}s (live)", row.get(f), live.as_of),
                    Claim(f"{kind}s snapshot", old.get(f), snapshot.as_of),
                ],
            )
            if c:
                out.conflicts.setdefault((kind, key), []).append(c)


def _rows_by(df: pd.DataFrame, key: str) -> dict[str, dict]:
    return {r[key]: r for r in df.to_dict("records")}
