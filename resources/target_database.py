"""A workflow's target system kept as SQL tables: in the database its `url` names (from the
workflow's own environment variable), else beside Bosun's own tables. A workflow subclasses
it and adds its reads and writes; its tables are created on first use."""

from __future__ import annotations

from typing import Optional

import dagster as dg
import sqlalchemy as sa

from orchestration.core import settings
from orchestration.core.db import engine_for
from resources.env import resolved


class TargetDatabase(dg.ConfigurableResource):
    url: Optional[str] = None

    @property
    def resolved_url(self) -> str:
        url = resolved(self.url)
        return settings.normalise_url(url) if url else settings.database_url()

    def engine_for(self, metadata: sa.MetaData) -> sa.Engine:
        engine = engine_for(self.resolved_url)
        metadata.create_all(engine, checkfirst=True)
        return engine
