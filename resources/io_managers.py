"""Where asset and op outputs go: nothing is pickled to the local disk.

- `io_manager` (every asset's default): `DatabaseIOManager`, the value in Bosun's database
  (orchestration/core/stored_values.py), so a run on any machine reads what another produced.
- `bosun_in_run_io_manager`: a batch run's own values (the context, the decisions, the
  payment plan), handed from step to step in memory and gone when the run ends, while batch
  jobs run in-process (the default). With `BOSUN_RUN_EXECUTOR=celery` a step may run on
  another worker, on another machine: `in_run_io_manager()` then binds the key to
  `RunValuesIOManager`, the same database rows as `DatabaseIOManager`, filed under the run's
  batch so that the audit's retention prunes them (orchestration/core/executors.py).
"""

from __future__ import annotations

from typing import Optional

import dagster as dg

from orchestration.core import settings
from orchestration.core.executors import steps_leave_the_process
from orchestration.core.settings import IN_RUN_IO_MANAGER  # noqa: F401  (named by the engine, bound here)
from orchestration.core.stored_values import StoredValues
from resources.env import resolved


def _name_and_partition(context) -> tuple[str, str | None]:
    if context.has_asset_key:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return "/".join(context.asset_key.path), partition
    # An op output outside an asset: scoped to its run.
    return "/".join(context.get_identifier()), None


class DatabaseIOManager(dg.ConfigurableIOManager):
    """Outputs pickled into Bosun's database (`url` unset: BOSUN_DATABASE_URL or the embedded file)."""

    url: Optional[str] = None

    def _store(self) -> StoredValues:
        url = resolved(self.url)
        return StoredValues(settings.normalise_url(url) if url else settings.database_url())

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return  # MaterializeResult-style assets return nothing to keep
        name, partition = _name_and_partition(context)
        size = self._store().put(name, partition, obj, context.run_id)
        context.add_output_metadata({"stored_bytes": size})

    def load_input(self, context: dg.InputContext):
        upstream = context.upstream_output
        if context.has_asset_key:
            partition = context.asset_partition_key if context.has_asset_partitions else None
            return self._store().get("/".join(context.asset_key.path), partition)
        return self._store().get("/".join(upstream.get_identifier()), None)


class RunValuesIOManager(DatabaseIOManager):
    """A batch run's own values in Bosun's database, for executors whose steps run in other
    processes. An op's output is named by its run, step and output (never shared between
    runs) and filed under the run's partition (the batch), so `StoredValues.prune_partitions`
    removes it with the audit's retention instead of keeping it forever as an unpartitioned
    value would be."""

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None or context.has_asset_key or not context.has_partition_key:
            return super().handle_output(context, obj)
        size = self._store().put("/".join(context.get_identifier()), context.partition_key, obj, context.run_id)
        context.add_output_metadata({"stored_bytes": size})

    def load_input(self, context: dg.InputContext):
        if context.has_asset_key or not context.has_partition_key:
            return super().load_input(context)
        return self._store().get("/".join(context.upstream_output.get_identifier()), context.partition_key)


def in_run_io_manager(url: Optional[str] = None):
    """What `IN_RUN_IO_MANAGER` is bound to: memory while a run's steps share one process (the
    default), Bosun's database when they may not (`BOSUN_RUN_EXECUTOR=celery`)."""
    if steps_leave_the_process():
        return RunValuesIOManager(url=url)
    return dg.mem_io_manager
