"""What a ticket is decided on: its text guarded (personal data redacted, instructions
quarantined), the customer from the CRM (live, else the snapshot), the customer's recent
tickets summarised within a token budget, and the help-centre articles BM25 ranks first."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from pydantic import BaseModel, Field

from assets.tickets import sample_data
from assets.tickets.systems import TicketSystems
from guardrails.input_guards import guard_with_names
from guardrails.untrusted import UntrustedText
from orchestration.context.assembly import assemble_many, recent_items
from orchestration.context.frame import base_record
from orchestration.context.knowledge_index import PolicyIndex, search_documents
from orchestration.context.retrieval_quality import knowledge_index_asset
from orchestration.context.sources import Snapshot, SourceSettings, read_source
from orchestration.context.tokens import counter_for
from orchestration.core import clock
from orchestration.core.lineage import layer_group

CREATED, UPDATED = "ticket.created", "ticket.updated"
ARTICLES = Path(__file__).with_name("articles")
GROUP = layer_group("tickets", "context")
HISTORY_TOKENS, ARTICLES_K, RECALL_K, RECALL_MIN = 160, 3, 3, 0.9
_daily = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=26))
LEGAL = re.compile(r"lawyer|legal action|\bsue\b|anwalt|verklag|avocat|justice|porter plainte|abogado|demandar", re.I)
AMOUNT = re.compile(r"(\d{1,6}(?:[.,]\d{2})?)\s*(?:€|eur|euro)", re.I)
REFUND = re.compile(r"refund|money back|erstatt|rembours|reembols", re.I)


class TicketCreated(BaseModel):
    ticket_id: str
    customer_id: str
    channel: str
    subject: UntrustedText = Field(max_length=500)
    body: UntrustedText = Field(max_length=20_000)
    language: str
    created_at: str


class TicketUpdated(TicketCreated):
    """The customer edited or added to the ticket: the latest text is decided on (debounced)."""


def register(registry) -> None:
    registry.register(CREATED, 1, TicketCreated)
    registry.register(UPDATED, 1, TicketUpdated)


@functools.lru_cache(maxsize=1)
def build_index() -> PolicyIndex:
    return PolicyIndex({p.stem: p.read_text() for p in sorted(ARTICLES.glob("*.md"))})


# BM25 over the help-centre articles; its check: recall@k on the labelled query set.
labelled = (sample_data.query_set, RECALL_K, RECALL_MIN, _daily)
ticket_kb_index = knowledge_index_asset("ticket_kb_index", GROUP, build_index, search_documents, *labelled)


@dg.asset(group_name=GROUP, freshness_policy=_daily, kinds={"sql"})
def ticket_crm_snapshot(tickets: TicketSystems) -> dg.Output[dict]:
    """The CRM's customers as last read: what a batch falls back on when the CRM is down."""
    rows = tickets.customers()
    return dg.Output({"as_of": clock.now().isoformat(), "customers": rows}, metadata={"customers": len(rows)})


def facts_of(body: str, customer: dict | None) -> dict:
    amounts = [float(a.replace(",", ".")) for a in AMOUNT.findall(body)] if REFUND.search(body) else []
    return {
        "customer_known": customer is not None,
        "vip": bool(customer and customer["vip"]),
        "tier": customer["tier"] if customer else "unknown",
        "legal_threat": bool(LEGAL.search(body)),
        "refund_amount": max(amounts, default=0.0),
    }


def history(tickets: list[dict], created_at: str) -> list:
    """The customer's earlier tickets, newest first, each with a one-line summary."""
    content = lambda t: {k: t[k] for k in ("subject", "team", "priority", "reopened_at")}  # noqa: E731
    name, summary = lambda t: f"ticket:{t['ticket_id']}", lambda t: f"{t['created_at'][:10]} {t['subject'][:40]}"  # noqa: E731
    return recent_items(tickets, created_at, "created_at", name, "helpdesk", content, summary)


def assemble(call, frame) -> list[dict]:
    """The batch step: one context per kept event, and the batch's figures."""
    inputs = call.inputs
    records, crm = contexts(
        frame.events, call.resources["tickets"], inputs["ticket_kb_index"], inputs["ticket_crm_snapshot"]
    )
    flagged = {"pii_redacted": "pii_found", "quarantined": "injection_suspected"}
    call.metadata.update({"crm": crm, **{m: sum(bool(r["facts"][f]) for r in records) for m, f in flagged.items()}})
    return records


def contexts(events, desk: TicketSystems, index: PolicyIndex, snap: dict) -> tuple[list[dict], str]:
    """The contexts of these inbox events, and how the CRM was read (live, stale, missing)."""
    payloads = [ev.envelope.payload for ev in events]
    ids = sorted({p["customer_id"] for p in payloads})
    snapshot = Snapshot({k: v for k, v in snap["customers"].items() if k in ids}, datetime.fromisoformat(snap["as_of"]))
    crm = read_source("crm", lambda: desk.customers(ids), SourceSettings(timeout_s=5.0), snapshot=snapshot)
    past = read_source("helpdesk", lambda: desk.tickets_of(ids), SourceSettings(timeout_s=5.0))
    names, records = [c["name"] for c in snap["customers"].values()], []
    for ev, p in zip(events, payloads):
        customer, earlier = (crm.value or {}).get(p["customer_id"]), (past.value or {}).get(p["customer_id"], [])
        name = customer["name"] if customer else None
        g = guard_with_names(f"{p['subject']}\n{p['body']}", name or "", names)
        text, local_text = g.text, g.classifier_text
        facts = {
            **facts_of(p["body"], customer),
            "pii_found": g.pii_found,
            "injection_suspected": bool(g.injection_signals),
        }
        # What the text models read, kept with the facts: a reviewer's correction retrains on it.
        facts["model_text"] = f"{local_text} __tier_{facts['tier']} __vip_{facts['vip']}"
        records.append(
            {
                **base_record(ev),
                "ticket": {k: p[k] for k in ("ticket_id", "customer_id", "channel", "language", "created_at")},
                **{"text": text, "query": local_text, "local_text": facts["model_text"]},
                "customer": {k: v for k, v in (customer or {}).items() if k not in ("name", "email")},
                **{"customer_name": name, "facts": facts, "quality_factors": crm.quality_factors()},
                "sources": {"crm": crm.describe(), "helpdesk": past.describe()},
                "previous_priority": {t["ticket_id"]: t["priority"] for t in earlier}.get(p["ticket_id"], "normal"),
                "earlier": history(earlier, p["created_at"]),
            }
        )
    for r, a in zip(records, assemble_many([r.pop("earlier") for r in records], HISTORY_TOKENS, counter_for(None))):
        r["history"], r["assembly"] = a.document, a.provenance()
    attach_articles(records, index, ARTICLES_K)
    return records, crm.status


def attach_articles(records: list[dict], index: PolicyIndex, k: int) -> None:
    """The top-k articles for each ticket's (guarded) text; the full text of each for the reply."""
    first = {p.doc: p for p in reversed(index.passages)}  # an article's title and its first paragraph
    for r, hits in zip(records, search_documents(index, [r["query"] for r in records], k)):
        r["articles"] = [
            {"id": d, "title": first[d].heading, "score": round(s, 3), "text": first[d].text} for d, s in hits
        ]
