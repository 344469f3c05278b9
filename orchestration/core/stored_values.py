"""Values that assets hand to later runs, kept in Bosun's database instead of on a disk.

Dagster's default IO manager pickles every output under DAGSTER_HOME/storage, on the
machine that ran the step, with no retention: every batch's context (vendors' IBANs, the
invoices' free text) stayed there. Bosun's batch runs keep their in-run values in memory;
what a later run must read (a context snapshot, a model) is one row here per name and
partition, replaced when it is materialized again, readable from any machine, and pruned
with the audit's retention when it belongs to an old partition.
"""

from __future__ import annotations

import pickle
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import engine_for, stored_values


class StoredValues:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    def put(self, name: str, partition: str | None, value: Any, run_id: str | None = None) -> int:
        """Store `value` (replacing the previous one); returns its size in bytes."""
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        where = (stored_values.c.name == name) & (stored_values.c.partition_key == (partition or ""))
        with self.engine.begin() as conn:
            conn.execute(stored_values.delete().where(where))
            conn.execute(
                stored_values.insert().values(
                    name=name, partition_key=partition or "", value=blob, run_id=run_id, stored_at=clock.now()
                )
            )
        return len(blob)

    def get(self, name: str, partition: str | None) -> Any:
        with self.engine.connect() as conn:
            blob = conn.execute(
                sa.select(stored_values.c.value).where(
                    stored_values.c.name == name, stored_values.c.partition_key == (partition or "")
                )
            ).scalar()
        if blob is None:
            raise KeyError(
                f"no stored value for {name}"
                + (f" partition {partition}" if partition else "")
                + ": materialize it first"
            )
        return pickle.loads(blob)

    def prune_partitions(self, before: datetime) -> int:
        """Partitioned values stored before `before` (the audit's retention); an unpartitioned
        value is the current one, however old, and stays."""
        with self.engine.begin() as conn:
            return conn.execute(
                stored_values.delete().where(stored_values.c.partition_key != "", stored_values.c.stored_at < before)
            ).rowcount
