"""More context for an invoice the decision loop is unsure of (its `read_more` hook).

The invoice's sources are read again, live: its vendor, its purchase order and the payments
(a source that was down or stale when the batch was read may answer now); the facts are
derived again, still counting the batch's earlier invoices against the purchase order; and
the policies are searched with a broader query (every fact the case raises, plus what was
invoiced), keeping the broader passages only when they speak to the case better. A source
that still fails keeps what the batch read had. Nothing new (same facts, same sources, same
passages) answers None: the model would be asked the same question.

A context rebuilt from the audit (replay) has no sources to re-read: only the policies are.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Callable, Optional, Sequence, Union

from assets.invoices.assembly import assemble_records
from assets.invoices.confidence import broader_query, retrieval_factor
from assets.invoices.context import _facts, _plain_once
from assets.invoices.context_sources import read_batch_sources
from assets.invoices.erp import ERPResource
from orchestration.action.batch import action_key
from orchestration.context.frame import context_hash
from orchestration.context.sources import LIVE
from orchestration.context.tokens import TokenCounter, counter_for
from resources.context_sources import ContextSources
from resources.knowledge_base import PolicyIndex

BROADER_K = 6
_SOURCE_FACTORS = ("stale_source:", "missing_source:")


class MoreContext:
    """`index` may be a function building the index: it is then built only when some
    invoice of the batch asks for more context, which most batches never do."""

    def __init__(
        self,
        index: Union[PolicyIndex, Callable[[], PolicyIndex], None] = None,
        erp: Optional[ERPResource] = None,
        sources: Optional[ContextSources] = None,
        counter: Optional[TokenCounter] = None,
    ):
        self._index, self.erp, self.sources = index, erp, sources
        self.counter = counter or counter_for("local")

    def index(self) -> Optional[PolicyIndex]:
        if callable(self._index) and not isinstance(self._index, PolicyIndex):
            self._index = self._index()
        return self._index

    def __call__(self, contexts: Sequence[dict], proposals: Sequence[dict]) -> list[Optional[dict]]:
        records = [copy.deepcopy(c) for c in contexts]
        changed = [False] * len(records)
        rereadable = [i for i, r in enumerate(records) if "batch_state" in r]
        if self.erp is not None and rereadable:
            for i, moved in zip(rereadable, self._reread_sources([records[i] for i in rereadable])):
                changed[i] = moved
        index = self.index() if records else None
        if index is not None:
            for i, moved in enumerate(_broader_knowledge(records, index)):
                changed[i] = changed[i] or moved
        out: list[Optional[dict]] = []
        for r, moved in zip(records, changed):
            if not moved:
                out.append(None)
                continue
            if "batch_state" in r:
                assemble_records([r], r["sources"], self.counter)
            else:
                # A replayed context keeps the audit's assembly: the new passages are added to it.
                kept = r.setdefault("assembly", {}).setdefault("kept", [])
                kept += [{"item": f"policy:{p['doc']}#{p['heading']}"} for p in r["policy_passages"]]
            if r.get("assembly", {}).get("hash") is not None:
                r["context_hash"] = context_hash(r)
            out.append(r)
        return out

    def _reread_sources(self, records: list[dict]) -> list[bool]:
        batch = read_batch_sources(
            [r["invoice"] for r in records], self.erp, self.sources or ContextSources(), snapshots={}, windows={}
        )
        live = {name for name, reading in batch.readings.items() if reading.status == LIVE}
        plain: dict = {}
        moved = []
        for r in records:
            p = r["invoice"]
            inv, po_number, amount = (p["vendor_id"], p["invoice_id"]), p["po_number"], Decimal(str(p["amount"]))
            if "vendors" in live:
                r["vendor"] = _plain_once(plain, "vendor", p["vendor_id"], batch.vendor_by_id.get(p["vendor_id"]))
            if "purchase_orders" in live:
                r["purchase_order"] = _plain_once(plain, "po", po_number, batch.po_by_number.get(po_number))
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


def _broader_knowledge(records: list[dict], index: PolicyIndex) -> list[bool]:
    """The broader query's passages replace a record's own only when they speak to the case
    better (a weaker top score or none at all)."""
    hits = index.search_many([broader_query(r) for r in records], k=BROADER_K)
    moved = []
    for r, found in zip(records, hits):
        passages = [
            {
                "doc": x.doc,
                "heading": x.heading,
                "doc_version": x.doc_version,
                "score": round(s, 3),
                "text": x.text,
                "question": "broader",
            }
            for x, s in found
        ]
        better = retrieval_factor(passages).penalty < retrieval_factor(r.get("policy_passages")).penalty
        if better:
            r["policy_passages"] = passages
            # A context first read without an index had no knowledge source to describe.
            r.setdefault("sources", {}).setdefault(
                "knowledge", {"status": LIVE, "age_s": 0.0, "freshness": "fresh", "as_of": None}
            )
            r.setdefault("knowledge", {})["broader_query"] = True
        moved.append(better)
    return moved
