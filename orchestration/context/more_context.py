"""More context for the decisions the loop is unsure of: the decision loop's `read_more` step
(orchestration/decision/loop.py) for any workflow with sources and a knowledge index.

The contexts' sources are read again by the workflow (its `reread` hook: a source that was
down or stale when the batch was read may answer now, and the workflow derives its facts
again); the knowledge is searched with a broader query (the workflow's `query`: every fact
the case raises, say), keeping the broader passages only when they speak to the case better
(the workflow's `weakness` of a list of passages: lower is better). A context that moved is
assembled again (`reassemble`) and hashed again. Nothing new (same facts, same sources, same
passages) answers None: the model would be asked the same question.

A context rebuilt from the audit (replay) has no sources to re-read (`rereadable` says which
can be): only the knowledge is, and the new passages are added to the audit's assembly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from orchestration.context.frame import context_hash
from orchestration.context.knowledge_index import KnowledgeIndex
from orchestration.context.sources import LIVE


@dataclass(frozen=True)
class Rereading:
    """What only the workflow knows about reading a context again."""

    query: Callable[[dict], str]  # a context -> its broader knowledge query
    weakness: Callable[[Optional[list]], float]  # passages -> how badly they speak to the case
    reassemble: Callable[[list[dict]], None]  # assemble these contexts' documents again, in place
    # Re-read these contexts' sources, in place; per context, whether anything changed.
    reread: Optional[Callable[[list[dict]], list[bool]]] = None
    rereadable: Callable[[dict], bool] = lambda context: True
    k: int = 6  # passages the broader query keeps


class MoreContext:
    """`index` may be a function building the index: it is then built only when some context
    of the batch asks for more, which most batches never do."""

    def __init__(self, rereading: Rereading, index: Any = None):
        self.rereading, self._index = rereading, index

    def index(self) -> Optional[KnowledgeIndex]:
        if callable(self._index) and not isinstance(self._index, KnowledgeIndex):
            self._index = self._index()
        return self._index

    def __call__(self, contexts: Sequence[dict], proposals: Sequence[dict]) -> list[Optional[dict]]:
        how = self.rereading
        records = [copy.deepcopy(c) for c in contexts]
        changed = [False] * len(records)
        rereadable = [i for i, r in enumerate(records) if how.rereadable(r)]
        if how.reread is not None and rereadable:
            for i, moved in zip(rereadable, how.reread([records[i] for i in rereadable])):
                changed[i] = moved
        index = self.index() if records else None
        if index is not None:
            for i, moved in enumerate(broader_knowledge(records, index, how)):
                changed[i] = changed[i] or moved
        out: list[Optional[dict]] = []
        for r, moved in zip(records, changed):
            if not moved:
                out.append(None)
                continue
            if how.rereadable(r):
                how.reassemble([r])
            else:
                # A replayed context keeps the audit's assembly: the new passages are added to it.
                kept = r.setdefault("assembly", {}).setdefault("kept", [])
                kept += [{"item": f"policy:{p['doc']}#{p['heading']}"} for p in r["policy_passages"]]
            if r.get("assembly", {}).get("hash") is not None:
                r["context_hash"] = context_hash(r)
            out.append(r)
        return out


def broader_knowledge(records: list[dict], index: KnowledgeIndex, how: Rereading) -> list[bool]:
    """The broader query's passages replace a record's own only when they speak to the case
    better (a weaker top score or none at all)."""
    hits = index.search_many([how.query(r) for r in records], k=how.k)
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
        better = how.weakness(passages) < how.weakness(r.get("policy_passages"))
        if better:
            r["policy_passages"] = passages
            # A context first read without an index had no knowledge source to describe.
            r.setdefault("sources", {}).setdefault(
                "knowledge", {"status": LIVE, "age_s": 0.0, "freshness": "fresh", "as_of": None}
            )
            r.setdefault("knowledge", {})["broader_query"] = True
        moved.append(better)
    return moved
