"""Optional embeddings for policy retrieval, through any OpenAI-compatible endpoint.

BM25 stays the default (no model, no service). When `BOSUN_EMBEDDINGS_MODEL` is set, the
policy index also embeds its passages, and retrieval fuses the BM25 and the embedding
rankings (reciprocal rank fusion); the relevance floor for knowledge gaps stays on BM25.
"""

from __future__ import annotations

from typing import Optional

import dagster as dg

from resources.env import HidesApiKey, resolved


class Embeddings(dg.ConfigurableResource):
    """No embeddings configured: retrieval is BM25 only."""

    @property
    def enabled(self) -> bool:
        return False

    @property
    def model_name(self) -> str:
        return "none"

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("no embeddings endpoint configured (BOSUN_EMBEDDINGS_MODEL)")


class OpenAIEmbeddings(HidesApiKey, Embeddings):
    api_key: str
    base_url: Optional[str] = None
    model: str = "text-embedding-3-small"
    timeout_s: float = 10.0
    max_retries: int = 2
    batch_size: int = 256

    @property
    def enabled(self) -> bool:
        return True

    @property
    def model_name(self) -> str:
        return str(resolved(self.model))

    def embed(self, texts: list[str]) -> list[list[float]]:
        import openai

        client = openai.OpenAI(
            api_key=resolved(self.api_key),
            base_url=resolved(self.base_url),
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        )
        vectors: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            reply = client.embeddings.create(model=self.model_name, input=texts[i : i + self.batch_size])
            vectors += [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]
        return vectors
