"""One decision's context as a structured document within a token budget, with provenance.

Items are ranked by relevance x importance (required items first); each is kept whole if
it fits, else replaced by its summary if that fits, else dropped, and every choice is
recorded with its reason, the item's source and that source's freshness. The hash of the
document ties a decision to exactly what it was made from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestration.context.tokens import TokenCounter


@dataclass
class ContextItem:
    name: str
    source: str
    content: Any  # JSON-ready
    relevance: float = 1.0  # to this decision, 0..1
    importance: float = 0.5  # of this kind of item, 0..1
    required: bool = False  # kept even over budget (and then flagged)
    summary: Any = None  # a shorter stand-in, when the whole item does not fit
    source_state: dict = field(default_factory=dict)  # status, age_s, freshness of its source

    @property
    def score(self) -> float:
        return round(self.relevance * self.importance, 4)


@dataclass
class Assembly:
    document: str
    tokens: int
    budget: int
    tokenizer: str
    kept: list[dict]
    dropped: list[dict]
    hash: str

    @property
    def within_budget(self) -> bool:
        return self.tokens <= self.budget

    def provenance(self) -> dict:
        return {
            "tokens": self.tokens,
            "budget": self.budget,
            "within_budget": self.within_budget,
            "tokenizer": self.tokenizer,
            "hash": self.hash,
            "kept": self.kept,
            "dropped": self.dropped,
        }


def render(name: str, content: Any) -> str:
    body = (
        content if isinstance(content, str) else json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    )
    return f"## {name}\n{body}\n"


def assemble_many(
    batches: list[list[ContextItem]], budget: int, counter: TokenCounter, min_score: float = 0.0
) -> list[Assembly]:
    """Assemble every decision of a batch; tokens are counted for the whole batch at once."""
    rendered: dict[tuple, str] = {}  # vendor rows, PO rows, passages: shared objects, rendered once

    def once(name: str, content: Any) -> str:
        key = (name, id(content)) if not isinstance(content, (str, int, float, bool)) else (name, content)
        text = rendered.get(key)
        if text is None:
            text = rendered[key] = render(name, content)
        return text

    full = [[once(i.name, i.content) for i in items] for items in batches]
    short = [[once(i.name, i.summary) if i.summary is not None else "" for i in items] for items in batches]
    flat = list(dict.fromkeys([t for row in full for t in row] + [t for row in short for t in row if t]))
    counts = dict(zip(flat, counter.count_many(flat)))
    return [
        _assemble(items, f, s, counts, budget, counter.name, min_score) for items, f, s in zip(batches, full, short)
    ]


def _assemble(
    items: list[ContextItem],
    full: list[str],
    short: list[str],
    counts: dict[str, int],
    budget: int,
    tokenizer: str,
    min_score: float,
) -> Assembly:
    scores = [i.score for i in items]
    order = sorted(range(len(items)), key=lambda i: (not items[i].required, -scores[i], i))
    used, parts, kept, dropped = 0, [], [], []
    for i in order:
        item = items[i]
        entry = {"item": item.name, "source": item.source, "score": scores[i], **item.source_state}
        n_full = counts[full[i]]
        if not item.required and scores[i] < min_score:
            dropped.append({**entry, "tokens": n_full, "reason": f"low value: score {scores[i]} below {min_score}"})
        elif item.required or used + n_full <= budget:
            used += n_full
            parts.append(full[i])
            kept.append(
                {
                    **entry,
                    "tokens": n_full,
                    "form": "full",
                    **({"reason": "required, over budget"} if used > budget else {}),
                }
            )
        elif short[i] and used + counts[short[i]] <= budget:
            used += counts[short[i]]
            parts.append(short[i])
            kept.append(
                {
                    **entry,
                    "tokens": counts[short[i]],
                    "form": "summary",
                    "reason": f"summarised: whole item needs {n_full} tokens, {budget - used + counts[short[i]]} left",
                }
            )
        else:
            dropped.append(
                {**entry, "tokens": n_full, "reason": f"over budget: needs {n_full} tokens, {budget - used} left"}
            )
    document = "".join(parts)
    return Assembly(
        document, used, budget, tokenizer, kept, dropped, hashlib.sha256(document.encode()).hexdigest()[:16]
    )


def recent_items(
    rows: list[dict], before: str, when: str, name: Callable[[dict], str], source: str,
    content: Callable[[dict], Any], summary: Callable[[dict], str], limit: int = 10,
) -> list[ContextItem]:  # fmt: skip
    """Earlier records (tickets, orders) as context items, newest first: the newer, the more
    relevant; each with a one-line summary for when the whole does not fit."""
    earlier = sorted((r for r in rows if str(r[when]) < before), key=lambda r: str(r[when]), reverse=True)[:limit]
    return [
        ContextItem(name(r), source, content(r), relevance=1.0 / (1 + i), summary=summary(r))
        for i, r in enumerate(earlier)
    ]
