"""Concurrent writers against the batch cursor on Postgres: nothing skipped, nothing twice.

Four writer processes put N events into a fresh Postgres inbox (`Inbox.ingest`, 20 per
transaction) four ways, each on its own database:

1. writers alone        - the baseline ingest rate;
2. old cursor           - while a reader loop moves a cursor past the highest seq it sees
                          (the query the sensor ran before the commit fence): events it never
                          saw are the ones the old sensor skipped;
3. fenced cursor        - the same loop through `Inbox.pending_after` (the commit fence): none
                          skipped; its ingest rate against the baseline is the fence's cost;
4. sensor + batch runs  - while the real inbox sensor (`build_inbox_batch_sensor`) ticks in a
                          loop and a runner thread executes its batches in-process
                          (`run_batches`), each claiming its events and marking them done;
                          drained to the end: events left `received`, events processed twice,
                          sweeps needed, and the ingest rate against the baseline.

    python benchmarks/inbox_race.py [--events 10000] [--writers 4] [--per-call 20] [--pg-url URL]

Exits 1 when an event is left `received`, processed twice, or skipped by the fenced cursor. Without Postgres it says so and
exits 0 (SQLite serialises writers, so it cannot skip).
"""

import argparse
import json
import multiprocessing as mp
import os
import queue
import tempfile
import threading
import time
import uuid
from collections import Counter

import pydantic
import sqlalchemy as sa

PING = "bench.ping"
processed: list[str] = []
# Dagster is imported inside the functions that use it: the writer processes (spawned, so they
# re-import this module) then start in a fraction of the time.


class Ping(pydantic.BaseModel):
    n: int


def _workflow(url: str):
    import dagster as dg

    from orchestration.trigger.batching import BatchPolicy
    from orchestration.trigger.envelope import PayloadRegistry
    from resources.database import BosunDatabase
    from sensors.inbox_batches import build_inbox_batch_sensor

    registry = PayloadRegistry()
    registry.register(PING, 1, Ping)
    batches = dg.DynamicPartitionsDefinition(name="bench_batches")

    @dg.asset
    def bench_context() -> int:
        return 1

    @dg.asset(partitions_def=batches)
    def bench_outcomes(context: dg.AssetExecutionContext, bosun_db: BosunDatabase) -> dg.MaterializeResult:
        inbox = bosun_db.inbox()
        events = inbox.claim_batch(context.partition_key, [PING])
        processed.extend(e.key for e in events)
        inbox.set_states([{"key": e.key, "status": "done"} for e in events], batch_id=context.partition_key)
        return dg.MaterializeResult(metadata={"events": len(events)})

    job = dg.define_asset_job("bench_batch_job", selection=[bench_outcomes])
    bootstrap = dg.define_asset_job("bench_bootstrap_job", selection=[bench_context])
    policy = BatchPolicy(max_events=1000, min_events=250, max_wait_seconds=1.0, max_in_flight=4)
    sensor = build_inbox_batch_sensor("bench_inbox_sensor", [PING], batches, job, bootstrap, [bench_context], policy)
    defs = dg.Definitions(
        assets=[bench_context, bench_outcomes],
        jobs=[job, bootstrap],
        sensors=[sensor],
        resources={"bosun_db": BosunDatabase(url=url)},
    )
    return registry, batches, sensor, defs, bench_context


def _envelope(i: int) -> dict:
    return {
        "source": "bench",
        "id": f"p{i}",
        "type": PING,
        "schema_version": 1,
        "occurred_at": "2026-11-02T08:00:00+00:00",
        "entity_key": f"E{i}",
        "payload": {"n": i},
    }


def _write(url: str, first: int, stop: int, per_call: int, ready, go, out) -> None:
    """One writer process: imports first, then ingests its share when told to, and reports
    when it started and ended (CLOCK_MONOTONIC is system-wide)."""
    from orchestration.trigger.envelope import PayloadRegistry
    from orchestration.trigger.inbox import Inbox

    registry = PayloadRegistry()
    registry.register(PING, 1, Ping)
    inbox = Inbox(url)
    ready.put(1)
    go.wait()
    started = time.monotonic()
    for start in range(first, stop, per_call):
        inbox.ingest([_envelope(i) for i in range(start, min(start + per_call, stop))], registry)
    out.put((started, time.monotonic()))


class Writers:
    """`writers` processes (no shared interpreter lock with the sensor and the runs) that
    each ingest their share of `events`, `per_call` per transaction."""

    def __init__(self, url: str, args):
        ctx = mp.get_context("spawn")
        self._ready, self._go, self._out = ctx.Queue(), ctx.Event(), ctx.Queue()
        share = args.events // args.writers
        self._procs = [
            ctx.Process(
                target=_write,
                args=(url, w * share, (w + 1) * share, args.per_call, self._ready, self._go, self._out),
                daemon=True,
            )
            for w in range(args.writers)
        ]
        for p in self._procs:
            p.start()
        for _ in self._procs:
            self._ready.get(timeout=300)
        self.events = share * args.writers

    def start(self) -> None:
        self._go.set()

    def alive(self) -> bool:
        return any(p.is_alive() for p in self._procs)

    def seconds(self) -> float:
        """From the first writer's start to the last one's end (waits for them)."""
        spans = [self._out.get(timeout=600) for _ in self._procs]
        for p in self._procs:
            p.join(timeout=60)
        failed = [p.exitcode for p in self._procs if p.exitcode]
        if failed:
            raise SystemExit(f"a writer process failed: exit codes {failed}")
        return max(e for _, e in spans) - min(s for s, _ in spans)

    def stop(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()


def _rate(events: int, seconds: float) -> dict:
    return {"write_seconds": round(seconds, 2), "events_per_s": round(events / seconds)}


def writers_alone(url: str, args) -> dict:
    writers = Writers(url, args)
    try:
        writers.start()
        return _rate(writers.events, writers.seconds())
    finally:
        writers.stop()


def cursor_reader(url: str, args, fenced: bool) -> dict:
    """A reader that moves its cursor to the last seq it reads past it, in a loop while the
    writers write: unfenced, the query the sensor ran before; fenced, `Inbox.pending_after`.
    Events at or below the final cursor it never read are the ones a sensor would skip."""
    from orchestration.core.db import inbox as table
    from orchestration.trigger.inbox import Inbox

    inbox = Inbox(url)
    writers = Writers(url, args)
    seen, cursor, reads = set(), 0, 0
    try:
        writers.start()
        with inbox.engine.connect() as conn:
            while writers.alive():
                if fenced:
                    seqs = [s for s, _ in inbox.pending_after(cursor, [PING], 1_000_000)]
                else:
                    seqs = (
                        conn.execute(sa.select(table.c.seq).where(table.c.seq > cursor).order_by(table.c.seq))
                        .scalars()
                        .all()
                    )
                    conn.rollback()
                reads += 1
                if seqs:
                    seen.update(seqs)
                    cursor = seqs[-1]
            seconds = writers.seconds()
            all_seqs = set(conn.execute(sa.select(table.c.seq)).scalars())
    finally:
        writers.stop()
    return {
        **_rate(writers.events, seconds),
        "reads": reads,
        "events_skipped": len({s for s in all_seqs if s <= cursor} - seen),
    }


def sensor_and_runs(url: str, args, instance) -> dict:
    import dagster as dg

    from orchestration.trigger.inbox import Inbox
    from orchestration.trigger.runner import run_batches

    _, batches, sensor, defs, bootstrap_asset = _workflow(url)
    inbox = Inbox(url)
    dg.materialize([bootstrap_asset], instance=instance)
    processed.clear()
    requested: queue.Queue = queue.Queue()
    failed: list[str] = []

    def run_requested() -> None:
        while (key := requested.get()) is not None:
            failed.extend(run_batches(defs, "bench_batch_job", batches, [key], instance).failed)
            requested.task_done()

    def received() -> int:
        return inbox.counts()["by_status"].get("received", 0)

    runner = threading.Thread(target=run_requested, daemon=True)
    runner.start()
    writers = Writers(url, args)
    writers.start()
    started = time.monotonic()
    cursor, ticks, requests, sweeps, keys = None, 0, 0, 0, []
    while True:
        # The daemon creates a requested run (QUEUED) within its tick and the sensor sees it;
        # here a run exists once the runner starts it: the next tick waits for that.
        if keys := [k for k in keys if not instance.get_runs_count(dg.RunsFilter(tags={"dagster/partition": k}))]:
            time.sleep(0.02)
            continue
        writing = writers.alive()
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
        ) as ctx:
            result = sensor(ctx)
        ticks += 1
        if isinstance(result, dg.SensorResult) and result.run_requests:
            cursor = result.cursor or cursor
            requests += len(result.run_requests)
            sweeps += sum(1 for r in result.run_requests if r.tags.get("bosun/sweep"))
            keys = [r.partition_key for r in result.run_requests]
            for key in keys:
                requested.put(key)
        elif not writing and requested.unfinished_tasks == 0 and not received():
            break
    drained = time.monotonic() - started
    requested.put(None)
    runner.join()
    seconds = writers.seconds()
    counts = Counter(processed)
    return {
        **_rate(writers.events, seconds),
        "drained_s": round(drained, 2),
        "ticks": ticks,
        "batches": requests,
        "sweeps": sweeps,
        "failed_runs": len(failed),
        "left_received": received(),
        "processed": len(counts),
        "processed_twice": sum(1 for n in counts.values() if n > 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--per-call", type=int, default=20)
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("BOSUN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
    )
    args = ap.parse_args()
    os.environ["BOSUN_HOME"] = tempfile.mkdtemp(prefix="bosun-bench-race-")
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    try:
        admin.connect().close()
    except Exception as exc:  # noqa: BLE001
        print(json.dumps({"postgres": f"skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}"}))
        return

    import dagster as dg

    from orchestration.core.db import dispose
    from orchestration.trigger.runner import INSTANCE_OVERRIDES

    def fresh(run):
        name = f"bosun_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
        try:
            return run(url)
        finally:
            dispose(url)
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    figures = {"events": args.events, "writers": args.writers, "per_call": args.per_call}
    figures["writers_alone"] = fresh(lambda url: writers_alone(url, args))
    figures["old_cursor"] = fresh(lambda url: cursor_reader(url, args, fenced=False))
    figures["fenced_cursor"] = fresh(lambda url: cursor_reader(url, args, fenced=True))
    with dg.DagsterInstance.local_temp(overrides=INSTANCE_OVERRIDES) as instance:
        figures["sensor_and_runs"] = fresh(lambda url: sensor_and_runs(url, args, instance))
    baseline = figures["writers_alone"]["events_per_s"]
    for way in ("old_cursor", "fenced_cursor", "sensor_and_runs"):
        figures[way]["ingest_rate_vs_writers_alone"] = round(figures[way]["events_per_s"] / baseline, 2)
    print(json.dumps(figures, indent=2))
    admin.dispose()
    race = figures["sensor_and_runs"]
    if race["left_received"] or race["processed_twice"] or figures["fenced_cursor"]["events_skipped"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
