"""The audit chain's head, published outside Bosun's database on every batch.

A batch's last asset puts the chain head after its records (seq and hash) in its
materialization metadata (`anchor_metadata`), so Dagster's event log, a store Bosun's
tables do not control, keeps one anchor per batch. `check_anchors` compares the chain with
every anchor it can read: a chain rewritten and re-hashed from some record on (even from
the first, even by someone holding the audit key) no longer has the anchored hash at the
anchored seq, and a truncated chain ends before an anchor.

Records after the latest anchor are not covered until the next batch publishes one; anchors
older than the retention checkpoint are covered by the archives' own digests.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

ANCHOR_SEQ = "audit_head_seq"
ANCHOR_HASH = "audit_head_hash"


def anchor_metadata(seq: int, head_hash: str) -> dict:
    """The materialization metadata a batch's last asset carries (nothing for an empty append).
    The seq is text: a number would be plotted by the UI beside the batch's figures, as a
    line that only ever climbs (`read_anchors` reads either)."""
    if not seq:
        return {}
    return {ANCHOR_SEQ: dg.MetadataValue.text(str(seq)), ANCHOR_HASH: head_hash}


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    asset: str
    batch: str | None  # the materialization's partition
    run_id: str


def read_anchors(instance: dg.DagsterInstance, page: int = 1000) -> list[Anchor]:
    """Every anchor in the instance's event log, in seq order."""
    anchors = []
    for key in instance.get_asset_keys():
        cursor = None
        while True:
            result = instance.fetch_materializations(key, limit=page, cursor=cursor, ascending=True)
            for record in result.records:
                mat = record.asset_materialization
                meta = mat.metadata if mat is not None else {}
                if ANCHOR_SEQ in meta and ANCHOR_HASH in meta:
                    anchors.append(
                        Anchor(
                            int(meta[ANCHOR_SEQ].value),
                            str(meta[ANCHOR_HASH].value),
                            key.to_user_string(),
                            mat.partition,
                            record.run_id,
                        )
                    )
            if not result.has_more:
                break
            cursor = result.cursor
    return sorted(anchors, key=lambda a: a.seq)


def check_anchors(log, anchors: list[Anchor], from_seq: int, head_seq: int) -> dict:
    """The chain (an AuditLog) against the anchors: the first anchor it disagrees with."""
    if not anchors:
        return {"ok": True, "anchors": 0, "checked": 0, "note": "no anchors found"}
    live = [a for a in anchors if from_seq <= a.seq <= head_seq]
    stored = log.hashes_at(sorted({a.seq for a in live}))
    result = {
        "ok": True,
        "anchors": len(anchors),
        "checked": len(live),
        "before_checkpoint": sum(1 for a in anchors if a.seq < from_seq),
        "latest_anchor_seq": anchors[-1].seq,
    }
    for a in anchors:
        if a.seq < from_seq:
            continue
        where = f"batch {a.batch} (run {a.run_id}, asset {a.asset})"
        if a.seq > head_seq:
            return {
                **result,
                "ok": False,
                "first_bad_seq": head_seq + 1,
                "batch": a.batch,
                "run_id": a.run_id,
                "problem": f"the chain head ({head_seq}) is behind the anchor of {where} at record {a.seq}: "
                "records were deleted",
            }
        if stored.get(a.seq) != a.hash:
            return {
                **result,
                "ok": False,
                "first_bad_seq": a.seq,
                "batch": a.batch,
                "run_id": a.run_id,
                "problem": f"the chain head after {where} disagrees with the anchor of batch {a.batch}: record "
                f"{a.seq} has hash {str(stored.get(a.seq))[:16]}..., the anchor {a.hash[:16]}...: "
                f"the chain was rewritten at or before record {a.seq}",
            }
    return result
