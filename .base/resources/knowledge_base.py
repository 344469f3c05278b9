"""Knowledge retrieval over policy documents: BM25 (bm25s) over markdown passages.

BM25 is the embedded default because it needs no model download and no service; the
index is small enough to pickle as an asset value and load in every batch run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import bm25s
import dagster as dg

from orchestration import settings
from resources.env import resolved


@dataclass(frozen=True)
class Passage:
    doc: str
    heading: str
    text: str


def split_passages(doc_name: str, markdown: str) -> list[Passage]:
    """Paragraphs under their nearest heading: small enough to rank, big enough to read."""
    passages, heading = [], doc_name
    for block in re.split(r"\n\s*\n", markdown):
        block = block.strip()
        if not block:
            continue
        if block.startswith("#"):
            first, _, rest = block.partition("\n")
            heading = first.lstrip("#").strip()
            block = rest.strip()
            if not block:
                continue
        passages.append(Passage(doc_name, heading, block))
    return passages


class PolicyIndex:
    def __init__(self, documents: dict[str, str]):
        self.passages = [p for name, text in sorted(documents.items()) for p in split_passages(name, text)]
        if not self.passages:
            raise ValueError("no policy passages to index")
        self.version = hashlib.sha256("".join(sorted(documents.values())).encode()).hexdigest()[:12]
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize([f"{p.heading}. {p.text}" for p in self.passages],
                                             stopwords="en", show_progress=False), show_progress=False)

    def search_many(self, queries: list[str], k: int = 3) -> list[list[tuple[Passage, float]]]:
        if not queries:
            return []
        k = min(k, len(self.passages))
        tokens = bm25s.tokenize(queries, stopwords="en", show_progress=False)
        docs, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [[(self.passages[int(d)], float(s)) for d, s in zip(row_d, row_s) if s > 0]
                for row_d, row_s in zip(docs, scores)]


class PolicyDocuments(dg.ConfigurableResource):
    """Markdown policy documents in a folder; unset means BOSUN_SAMPLE_DIR/policies."""

    directory: Optional[str] = None

    def load(self) -> dict[str, str]:
        configured = resolved(self.directory)
        base = Path(configured) if configured else settings.sample_dir() / "policies"
        docs = {p.name: p.read_text() for p in sorted(base.glob("*.md"))}
        if not docs:
            raise FileNotFoundError(f"no policy documents (*.md) in {base}; run `bosun sample-data` first")
        return docs
