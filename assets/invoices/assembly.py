"""The document one invoice decision is made from, within a token budget.

What goes in, by importance: the invoice header and the derived facts (required), any
conflicts, vendor and purchase order, prior payments, the policy passages ranked by
their retrieval score, then line items and the memo (low value: summarised first). A
memo with instruction-like text never goes in (memo-handling-and-privacy.md).
"""

from __future__ import annotations

from orchestration.context.assembly import ContextItem, assemble_many
from orchestration.context.tokens import TokenCounter

TOKEN_BUDGET = 600
MIN_SCORE = 0.05

_HEADER = ("invoice_id", "vendor_id", "po_number", "amount", "currency", "issued_on", "due_on")


def items_for(r: dict, sources: dict[str, dict]) -> list[ContextItem]:
    inv, vendor, po = r["invoice"], r["vendor"], r["purchase_order"]
    state = lambda name: {k: sources[name][k] for k in ("status", "age_s", "freshness")}  # noqa: E731
    event = {"status": "live", "age_s": 0.0, "freshness": "fresh"}
    items = [
        ContextItem("invoice", "event", {k: inv[k] for k in _HEADER}, 1.0, 1.0, True, source_state=event),
        ContextItem("facts", "derived", r["facts"], 1.0, 1.0, True, source_state=event),
    ]
    if r["conflicts"]:
        items.append(
            ContextItem(
                "conflicts",
                "derived",
                [{k: c[k] for k in ("field", "resolved", "chosen_source", "value")} for c in r["conflicts"]],
                1.0,
                0.95,
                source_state=event,
            )
        )
    items.append(
        ContextItem(
            "vendor",
            "erp.vendors",
            _public_vendor(vendor),
            1.0,
            0.9,
            summary=vendor and {k: vendor[k] for k in ("vendor_id", "active", "risk_tier")},
            source_state=state("vendors"),
        )
    )
    items.append(
        ContextItem(
            "purchase_order",
            "erp.purchase_orders",
            po,
            1.0,
            0.9,
            summary=po and {k: po[k] for k in ("po_number", "amount", "status")},
            source_state=state("purchase_orders"),
        )
    )
    items.append(
        ContextItem(
            "prior_payments",
            "erp.payments",
            r["prior_payments"],
            1.0 if r["prior_payments"] else 0.3,
            0.8,
            summary={"count": len(r["prior_payments"])},
            source_state=state("payments"),
        )
    )
    passages = r.get("policy_passages", [])
    top = max((p["score"] for p in passages), default=1.0) or 1.0
    for p in passages:
        items.append(
            ContextItem(
                f"policy:{p['doc']}#{p['heading']}",
                f"knowledge:{p['doc']}@{p['doc_version']}",
                p["text"],
                round(p["score"] / top, 3),
                0.7,
                summary=p["text"].split(". ")[0].rstrip(".") + ".",
                source_state=state("knowledge"),
            )
        )
    lines = inv.get("line_items", [])
    items.append(ContextItem("line_items", "event", lines, 0.5, 0.4, summary={"count": len(lines)}, source_state=event))
    memo = ContextItem(
        "memo",
        "event",
        inv.get("note") or "",
        0.5 if inv.get("note") else 0.0,
        0.3,
        summary={"chars": len(inv.get("note") or ""), "pii_redacted": r["pii_found"]},
        source_state=event,
    )
    if r["facts"]["injection_suspected"]:
        memo.content, memo.summary, memo.relevance = "", None, 0.0  # quarantined: never shown to a model
        memo.name = "memo (quarantined: instruction-like text)"
    items.append(memo)
    return items


def assemble_records(
    records: list[dict], sources: dict[str, dict], counter: TokenCounter, budget: int = TOKEN_BUDGET
) -> None:
    assemblies = assemble_many([items_for(r, sources) for r in records], budget, counter, MIN_SCORE)
    for r, a in zip(records, assemblies):
        r["assembly"] = {**a.provenance(), "document": a.document}


def _public_vendor(vendor: dict | None) -> dict | None:
    # Bank details come from the vendor master at payment time; a model never needs them.
    return None if vendor is None else {k: v for k, v in vendor.items() if k != "iban"}
