"""More context for an invoice the decision loop is unsure of: the engine's step
(orchestration/context/more_context.py) with the invoice's re-read.

The invoice's sources are read again, live: its vendor, its purchase order and the payments
(a source that was down or stale when the batch was read may answer now); the facts are
derived again, still counting the batch's earlier invoices against the purchase order; the
policies are searched with the invoice's broader query. A source that still fails keeps what
the batch read had.

A context rebuilt from the audit (replay) has no `batch_state`: only the policies are read again.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Callable, Optional, Union

from assets.invoices.assembly import assemble_records
from assets.invoices.confidence import broader_query, retrieval_factor
from assets.invoices.context import _facts
from assets.invoices.context_sources import read_batch_sources
from assets.invoices.erp import ERPResource
from orchestration.action.batch import action_key
from orchestration.context.frame import plain_once
from orchestration.context.more_context import MoreContext, Rereading
from orchestration.context.sources import LIVE
from orchestration.context.tokens import TokenCounter, counter_for
from resources.context_sources import ContextSources
from resources.knowledge_base import PolicyIndex

BROADER_K = 6
_SOURCE_FACTORS = ("stale_source:", "missing_source:")


def more_context(
    index: Union[PolicyIndex, Callable[[], PolicyIndex], None] = None,
    erp: Optional[ERPResource] = None,
    sources: Optional[ContextSources] = None,
    counter: Optional[TokenCounter] = None,
) -> MoreContext:
    """The loop's `read_more` for invoices: without `erp` the sources are not read again,
    without `index` the policies are not."""
    counter = counter or counter_for("local")
    rereading = Rereading(
        query=broader_query,
        weakness=lambda passages: retrieval_factor(passages).penalty,
        reassemble=lambda records: assemble_records(records, records[0]["sources"], counter),
        reread=None if erp is None else lambda records: _reread_sources(records, erp, sources or ContextSources()),
        rereadable=lambda record: "batch_state" in record,
        k=BROADER_K,
    )
    return MoreContext(rereading, index)


def _reread_sources(records: list[dict], erp: ERPResource, sources: ContextSources) -> list[bool]:
    batch = read_batch_sources([r["invoice"] for r in records], erp, sources, snapshots={}, windows={})
    live = {name for name, reading in batch.readings.items() if reading.status == LIVE}
    plain: dict = {}
    moved = []
    for r in records:
        p = r["invoice"]
        inv, po_number, amount = (p["vendor_id"], p["invoice_id"]), p["po_number"], Decimal(str(p["amount"]))
        if "vendors" in live:
            r["vendor"] = plain_once(plain, "vendor", p["vendor_id"], batch.vendor_by_id.get(p["vendor_id"]))
        if "purchase_orders" in live:
            r["purchase_order"] = plain_once(plain, "po", po_number, batch.po_by_number.get(po_number))
        state = r["batch_state"]
        if "payments" in live:
            own = action_key(r["key"], "schedule_payment")
            r["prior_payments"] = [k for k in batch.paid.get(inv, []) if k != own]
            own_paid = own in batch.paid.get(inv, [])
            state["po_paid"] = str(batch.paid_po.get(po_number, Decimal(0)) - (amount if own_paid else 0))
        po = r["purchase_order"]
        facts = _facts(
            p,
            amount,
            r["vendor"],
            None if po is None else {**po, "amount": Decimal(str(po["amount"]))},
            {po_number: Decimal(state["po_paid"])},
            {po_number: Decimal(state["po_committed"])},
            bool(r["prior_payments"]) or state["seen_in_batch"],
            r["facts"]["injection_suspected"],
            r["facts"]["pii_in_memo"],
        )
        now_live = [n for n in live if r["sources"].get(n, {}).get("status") != LIVE]
        for n in now_live:
            r["sources"][n] = batch.readings[n].describe()
        r["quality_factors"] = [
            f
            for f in r["quality_factors"]
            if not (f["name"].startswith(_SOURCE_FACTORS) and f["name"].split(":", 1)[1] in now_live)
        ]
        moved.append(facts != r["facts"] or bool(now_live))
        r["facts"] = facts
    return moved
