"""A knowledge base's documents as a resource: markdown files in a configured folder. The index
over them is the engine's (orchestration/context/knowledge_index.py), re-exported here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg

from orchestration.context.knowledge_index import (  # noqa: F401  (re-exported)
    KnowledgeIndex,
    Passage,
    PolicyIndex,
    document_version,
    documents_version,
    split_passages,
)
from orchestration.core import settings
from resources.env import resolved


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
