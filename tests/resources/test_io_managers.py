"""Outputs never pickled to the local disk: values read across runs in Bosun's database,
a run's own values in memory."""

from datetime import timedelta

import dagster as dg

from orchestration.core import clock, settings
from orchestration.core.stored_values import StoredValues
from resources.io_managers import IN_RUN_IO_MANAGER, DatabaseIOManager

DAYS = dg.StaticPartitionsDefinition(["d1", "d2"])


@dg.asset
def snapshot() -> dict:
    return {"iban": "DE89370400440532013000"}


@dg.asset
def reader(snapshot: dict) -> int:
    return len(snapshot["iban"])


@dg.asset(partitions_def=DAYS, io_manager_key=IN_RUN_IO_MANAGER)
def in_run(context) -> str:
    return f"secret-{context.partition_key}"


@dg.asset(partitions_def=DAYS)
def daily(in_run: str) -> str:
    return in_run.upper()


def test_values_cross_runs_through_the_database_and_nothing_lands_on_disk(bosun_home, tmp_path):
    resources = {"io_manager": DatabaseIOManager(), IN_RUN_IO_MANAGER: dg.mem_io_manager}
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster"), set_dagster_home=False) as instance:
        assert dg.materialize([snapshot], instance=instance, resources=resources).success
        # Another run (as another machine would) reads the snapshot from the database.
        result = dg.materialize([reader, snapshot.to_source_asset()], instance=instance, resources=resources)
        assert result.output_for_node("reader") == 22
        assert dg.materialize([in_run, daily], instance=instance, resources=resources, partition_key="d1").success
    for path in (tmp_path / "dagster").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"DE89370400440532013000" not in data and b"secret-d1" not in data, path
    store = StoredValues(settings.database_url())
    assert store.get("snapshot", None) == {"iban": "DE89370400440532013000"}
    assert store.get("daily", "d1") == "SECRET-D1"
    # Retention: old partitions go, the current unpartitioned value stays.
    assert store.prune_partitions(clock.now() + timedelta(seconds=1)) == 1
    assert store.get("snapshot", None)["iban"]
