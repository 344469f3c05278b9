"""A knowledge base's index: BM25 (bm25s) over markdown passages, optionally fused with an
embedding ranking. BM25 is the embedded default because it needs no model download and no
service; the index is small enough to keep as an asset value and load in every batch run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Passage:
    doc: str
    heading: str
    text: str
    doc_version: str = ""  # hash of the document it came from: which edition a decision read

    @property
    def ref(self) -> str:
        return f"{self.doc}#{self.heading}"


def document_version(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def documents_version(documents: dict[str, str]) -> str:
    """The data version of a document set: changes when any document is added, edited or removed."""
    return hashlib.sha256(
        "".join(f"{n}:{document_version(t)}\n" for n, t in sorted(documents.items())).encode()
    ).hexdigest()[:12]


def split_passages(doc_name: str, markdown: str) -> list[Passage]:
    """Paragraphs under their nearest heading: small enough to rank, big enough to read."""
    passages, heading, version = [], doc_name, document_version(markdown)
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
        passages.append(Passage(doc_name, heading, block, version))
    return passages


class KnowledgeIndex:
    """BM25 over passages; with `embed` (texts -> vectors) also an embedding ranking, fused
    with BM25's by reciprocal rank. Scores stay BM25 scores, so a relevance floor keeps
    its meaning whichever ranking is used."""

    RRF_K = 60

    def __init__(
        self,
        documents: dict[str, str],
        embed: Callable[[list[str]], list[list[float]]] | None = None,
        embedding_model: str | None = None,
    ):
        self.passages = [p for name, text in sorted(documents.items()) for p in split_passages(name, text)]
        if not self.passages:
            raise ValueError("no passages to index")
        self.version = documents_version(documents)
        self.document_versions = {name: document_version(text) for name, text in sorted(documents.items())}
        texts = [f"{p.heading}. {p.text}" for p in self.passages]
        # imported when used: the code location loads without bm25s/numpy (code server RSS, run start)
        import bm25s
        import numpy as np

        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        self.embedding_model = embedding_model if embed is not None else None
        self._vectors = _normalised(np.asarray(embed(texts), dtype=np.float32)) if embed is not None else None

    def search_many(
        self, queries: list[str], k: int = 3, embed: Callable[[list[str]], list[list[float]]] | None = None
    ) -> list[list[tuple[Passage, float]]]:
        if not queries:
            return []
        import bm25s
        import numpy as np

        n = len(self.passages)
        tokens = bm25s.tokenize(queries, stopwords="en", show_progress=False)
        if self._vectors is None or embed is None:
            docs, scores = self._retriever.retrieve(tokens, k=min(k, n), show_progress=False, n_threads=1)
            return [
                [(self.passages[int(d)], float(s)) for d, s in zip(row_d, row_s) if s > 0]
                for row_d, row_s in zip(docs, scores)
            ]
        docs, scores = self._retriever.retrieve(tokens, k=n, show_progress=False, n_threads=1)
        similarity = _normalised(np.asarray(embed(queries), dtype=np.float32)) @ self._vectors.T
        out = []
        for row_d, row_s, sim in zip(docs, scores, similarity):
            bm25 = {int(d): float(s) for d, s in zip(row_d, row_s)}
            fused = {int(d): 1 / (self.RRF_K + r) for r, d in enumerate(row_d, 1) if bm25[int(d)] > 0}
            for r, d in enumerate(np.argsort(-sim), 1):
                fused[int(d)] = fused.get(int(d), 0.0) + 1 / (self.RRF_K + r)
            best = sorted(fused, key=lambda d: -fused[d])[:k]
            out.append([(self.passages[d], bm25.get(d, 0.0)) for d in best])
        return out


def _normalised(m: np.ndarray) -> np.ndarray:
    import numpy as np

    return m / np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)


# The name the invoice workflow's policies gave it first.
PolicyIndex = KnowledgeIndex


def search_documents(index: PolicyIndex, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Documents rather than passages, best first: a document's best passage stands for it
    (a help centre cites articles, not paragraphs)."""
    out = []
    for hits in index.search_many(queries, k=k * 3):
        best: dict[str, float] = {}
        for passage, score in hits:
            best.setdefault(passage.doc, score)
        out.append(list(best.items())[:k])
    return out
