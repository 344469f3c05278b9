"""The frame of any workflow's batch context: the batch claims its events, delivery triage
takes out twins, debounced updates and stale events (recorded), and each kept event gets a
record that ties the decision to it without copying its personal data, and, once the
workflow has filled it, a hash of everything the decision was made from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping, Sequence

from orchestration.trigger.delivery import DeliveryPolicy, triage
from orchestration.trigger.inbox import Inbox, InboxEvent


@dataclass(frozen=True)
class BatchFrame:
    events: list[InboxEvent]  # kept, in occurred_at order: "first copy wins" means the earliest
    counts: Mapping[str, int]  # what triage took out, by kind

    def metadata(self) -> dict[str, int]:
        names = {"duplicate": "content_duplicates", "debounced": "debounced", "stale": "stale_ignored"}
        names["stale_processed"] = "stale_processed"
        return {shown: self.counts.get(kind, 0) for kind, shown in names.items()}


def open_batch(
    inbox: Inbox,
    batch_id: str,
    event_types: Sequence[str],
    delivery_policies: Mapping[str, DeliveryPolicy],
    workflow: str,
) -> BatchFrame:
    # The batch claims its events first: an overlapping batch (a sweep, a backfill) never gets them too.
    events = inbox.claim_batch(batch_id, list(event_types))
    triaged = triage(inbox, events, delivery_policies, lock_name=workflow, batch_id=batch_id)
    kept = sorted(triaged.kept, key=lambda e: (e.envelope.occurred_at, e.seq))
    return BatchFrame(kept, dict(triaged.counts))


def event_reference(ev: InboxEvent) -> dict:
    """What the audit needs to tie a decision to its event, without copying personal data."""
    env = ev.envelope
    digest = hashlib.sha256(json.dumps(env.payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {
        "source": env.source,
        "id": env.id,
        "type": env.type,
        "schema_version": env.schema_version,
        "occurred_at": env.occurred_at.isoformat(),
        "payload_sha256": digest,
    }


def base_record(ev: InboxEvent) -> dict:
    """The fields every context record starts with."""
    return {
        "key": ev.key,
        "seq": ev.seq,
        "event_id": ev.envelope.id,
        "entity_key": ev.envelope.entity_key,
        "event": event_reference(ev),
        "occurred_at": ev.envelope.occurred_at.isoformat(),
    }


def context_hash(record: dict) -> str:
    """What the decision was made from, in 16 hex digits. An assembled document is covered by
    its own hash; hashing it twice buys nothing."""
    body = {k: v for k, v in record.items() if k not in ("assembly", "context_hash")}
    if "assembly" in record:
        body["assembly_hash"] = record["assembly"]["hash"]
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plain_once(cache: dict, kind: str, key: str, row: dict | None) -> dict | None:
    """A source row (a customer, an order) made JSON-ready once per batch (`cache` is the batch's):
    every record that names it shares the one dict, so the assembly renders it once."""
    if (kind, key) not in cache:
        cache[(kind, key)] = (
            None
            if row is None
            else {
                k: (
                    str(v)
                    if isinstance(v, Decimal) or hasattr(v, "isoformat")
                    else v.item()
                    if hasattr(v, "item")
                    else v
                )
                for k, v in row.items()
            }
        )
    return cache[(kind, key)]
