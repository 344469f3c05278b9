"""Acceptance: 5,000 hostile deliveries through `bosun ingest` and the HTTP API, processed
by the inbox sensor's batches while they arrive.

The stream: 3,000 invoices, 800 re-deliveries of an id (some after their batch ran),
700 copies of a payload under a new id, 500 older versions of an invoice sent late
(reordered), the first 2,000 as one burst of concurrent API requests. A small driver plays
the daemon: it ticks the real sensor, applies its partition requests and launches every
requested batch at once as its own run process, so only the sensor's backpressure keeps
runs within the limit.
"""

import copy
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from bosun_testing import BosunServer

from orchestration.trigger.inbox import TERMINAL_STATES

BOSUN = Path(sys.executable).parent / "bosun"
DAGSTER = Path(sys.executable).parent / "dagster"
MAX_IN_FLIGHT = 2
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def max_overlap(records) -> int:
    """Most runs executing at one moment, from the runs' own start and end times."""
    edges = sorted(
        [(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records], key=lambda e: (e[0], e[1])
    )
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


pytestmark = pytest.mark.slow  # about a minute on 2 cores


def _shifted(event: dict, seconds: float) -> str:
    return (datetime.fromisoformat(event["occurred_at"]) + timedelta(seconds=seconds)).isoformat()


def hostile_stream(base: list[dict], rng: random.Random) -> tuple[list[dict], list[list[dict]], dict]:
    """(burst, later chunks, expectations)."""
    burst, rest = base[:2000], base[2000:]
    redeliveries = [copy.deepcopy(rng.choice(base)) for _ in range(800)]
    content_copies, copy_of = [], {}
    for i, e in enumerate(rng.sample(base, 700)):
        c = copy.deepcopy(e)
        c["id"], c["occurred_at"] = f"copy-{i:05d}", _shifted(e, 5)
        content_copies.append(c)
        copy_of[f"{c['source']}:{c['id']}"] = f"{e['source']}:{e['id']}"
    older = []
    for i, e in enumerate(rng.sample(burst, 500)):  # their newer version went out in the burst
        o = copy.deepcopy(e)
        o["id"], o["occurred_at"] = f"older-{i:05d}", _shifted(e, -3600)
        o["payload"]["memo"] = "first draft"  # the sample is sent as v1
        older.append(o)
    later = rest + redeliveries + content_copies + older
    rng.shuffle(later)
    chunks = [later[i : i + 500] for i in range(0, len(later), 500)]
    return (
        burst,
        chunks,
        {
            "distinct_ids": 3000 + 700 + 500,
            "redeliveries": 800,
            "older_ids": {f"{o['source']}:{o['id']}" for o in older},
            "copy_of": copy_of,
        },
    )


class DaemonStandIn:
    """Ticks the sensor and launches what it requests, as the daemon's sensor loop and run
    launcher would: each run is a `dagster job execute` process on the shared instance (Dagster
    runs in-process executions one at a time per process). It counts a launched run as in
    flight until it ends, and records whether the sensor ever asked for more than allowed."""

    def __init__(self, sensor, defs, instance, env, log_dir):
        self.sensor, self.defs, self.instance, self.env, self.log_dir = sensor, defs, instance, env, log_dir
        self.cursor, self.stop, self.errors = None, threading.Event(), []
        self.procs: dict[str, subprocess.Popen] = {}
        self.requested_over_limit, self.skips, self.sizes = [], Counter(), set()

    def _alive(self) -> int:
        for key, p in self.procs.items():
            if p.poll() not in (None, 0) and key not in self.errors:
                self.errors.append(key)
        return sum(1 for p in self.procs.values() if p.poll() is None)

    def _launch(self, req):
        log = open(self.log_dir / f"run-{req.partition_key}.log", "w")
        self.procs[req.partition_key] = subprocess.Popen(
            [
                str(DAGSTER),
                "job",
                "execute",
                "-m",
                "orchestration.definitions",
                "-j",
                req.job_name,
                "--tags",
                json.dumps({**req.tags, "dagster/partition": req.partition_key}),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def loop(self):
        while not self.stop.is_set():
            self._alive()
            with dg.build_sensor_context(
                instance_ref=self.instance.get_ref(),
                cursor=self.cursor,
                definitions=self.defs,
                resources=self.defs.resources,
            ) as ctx:
                data = self.sensor.evaluate_tick(ctx)
            # Counted after the tick: only this driver starts runs, so this is at most what the
            # sensor counted (runs can only have ended since).
            in_flight = self.instance.get_runs_count(dg.RunsFilter(job_name="invoice_batch_job", statuses=IN_FLIGHT))
            if in_flight + len(data.run_requests) > MAX_IN_FLIGHT:
                self.requested_over_limit.append((in_flight, len(data.run_requests)))
            for req in data.dynamic_partitions_requests:
                self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            if data.skip_message:
                self.skips[data.skip_message.split(":")[0]] += 1
            for req in data.run_requests:
                self.sizes.add(req.tags["bosun/batch_size_target"])
                self._launch(req)
            # A queued run exists in storage at once; a launched process registers its run
            # within seconds: wait for that before the next tick, as the run queue would.
            launched = [r.partition_key for r in data.run_requests]
            deadline = time.monotonic() + 60
            while (
                launched
                and time.monotonic() < deadline
                and not all(
                    self.procs[k].poll() is not None
                    or self.instance.get_runs_count(dg.RunsFilter(tags={"dagster/partition": k}))
                    for k in launched
                )
            ):
                time.sleep(0.2)
            self.cursor = data.cursor or self.cursor
            time.sleep(0.5)

    def shutdown(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
                    p.wait()


def test_five_thousand_hostile_deliveries_each_acted_on_once(world_maker, tmp_path, monkeypatch):
    from assets import invoices
    from orchestration.api.keys import ApiKeys
    from orchestration.trigger.batching import BatchPolicy
    from orchestration.trigger.sample_events import read_events
    from sensors.inbox_batches import build_inbox_batch_sensor

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\npython_logs:\n  python_log_level: INFO\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        world = world_maker(instance, 3000, 23)
        dg.materialize(invoices.context_assets, instance=instance, resources=world.resources)
        seen, base = set(), []
        for e in read_events(world.sample / "invoices.jsonl"):
            if e["id"] not in seen:
                seen.add(e["id"])
                base.append(e)
        base = base[:3000]
        burst, chunks, expect = hostile_stream(base, random.Random(5))
        sensor = build_inbox_batch_sensor(
            "hostile_test_sensor",
            ["invoice.received"],
            invoices.invoice_batches,
            invoices.invoice_batch_job,
            invoices.invoice_context_refresh_job,
            invoices.context_assets,
            BatchPolicy(max_events=600, min_events=50, max_wait_seconds=0.5, max_in_flight=MAX_IN_FLIGHT),
        )
        db = world.resources["bosun_db"]
        key, _ = ApiKeys(db.resolved_url).create("hostile", ["events:write"], rate_per_s=1000, burst=1000)
        headers = {"Authorization": f"Bearer {key}"}
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        server = BosunServer(env, tmp_path / "serve.log")
        daemon = DaemonStandIn(sensor, world.defs, instance, env, tmp_path)
        driver = threading.Thread(target=daemon.loop)
        try:
            server.wait_ready()

            def post(events):
                r = httpx.post(server.url + "/v1/events", json=events, headers=headers, timeout=120)
                assert r.status_code == 202, r.text
                return r.json()

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(post, [burst[i : i + 100] for i in range(0, 2000, 100)]))
            burst_s = time.monotonic() - started
            driver.start()
            for n, chunk in enumerate(chunks):
                if n % 2:
                    path = tmp_path / f"chunk{n}.jsonl"
                    path.write_text("".join(json.dumps(e) + "\n" for e in chunk))
                    proc = subprocess.run(
                        [str(BOSUN), "ingest", str(path)], env=env, capture_output=True, text=True, timeout=120
                    )
                    assert proc.returncode == 0, proc.stderr[-2000:]
                else:
                    for i in range(0, len(chunk), 100):
                        post(chunk[i : i + 100])
                time.sleep(1.0)  # let batches run while more arrives
            deadline = time.monotonic() + 400
            while db.inbox().counts()["by_status"].get("received") and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            daemon.stop.set()
            if driver.is_alive():
                driver.join(120)
            daemon.shutdown()
            server.stop()

        counts = db.inbox().counts()
        by_status = counts["by_status"]
        runs = instance.get_run_records(dg.RunsFilter(job_name="invoice_batch_job"))
        peak = max_overlap(runs)
        print(
            f"burst of 2,000 accepted in {burst_s:.2f} s; states {by_status}; batch sizes {sorted(daemon.sizes)}; "
            f"skips {dict(daemon.skips)}; max concurrent runs {peak}; runs {len(runs)}"
        )
        assert daemon.errors == []
        assert set(by_status) <= set(TERMINAL_STATES), by_status  # every event terminal
        assert counts["received"] == expect["distinct_ids"] and counts["duplicates"] == expect["redeliveries"]
        # Of each payload sent twice under two ids, one ends `duplicate` (whichever came second),
        # or `stale` (a later resubmission of that invoice in the sample was seen first).
        states = db.inbox().lookup([*expect["copy_of"], *expect["copy_of"].values()])
        both_kept = [
            (c, states[c]["status"], states[c]["reason"], o, states[o]["status"], states[o]["reason"])
            for c, o in expect["copy_of"].items()
            if not {states[c]["status"], states[o]["status"]} & {"duplicate", "stale"}
        ]
        assert both_kept == []
        assert by_status["duplicate"] >= 600
        # Never more than the configured batches in flight, and the sensor said when it held back.
        assert daemon.requested_over_limit == [] and 1 < peak <= MAX_IN_FLIGHT
        assert len(runs) == len(daemon.procs) and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # (How far the size adapts depends on timing; adaptive_size itself is tested in test_inbox.py.)
        assert daemon.skips["backpressure"] > 0 and all(50 <= int(n) <= 600 for n in daemon.sizes)
        # Each invoice acted on once.
        erp = world.resources["erp"]
        assert erp.invoices_paid_twice() == []
        paid = Counter(p["invoice_id"] for p in erp.live_payments())
        assert paid and max(paid.values()) == 1
        from orchestration.core.db import audit_log, stale_events

        with db.audit().engine.connect() as conn:
            decided = Counter(
                s for (s,) in conn.execute(sa.select(audit_log.c.subject).where(audit_log.c.kind == "decision"))
            )
            stale = {k: p for k, p in conn.execute(sa.select(stale_events.c.idempotency_key, stale_events.c.policy))}
        assert decided and max(decided.values()) == 1
        # Every stale event is recorded (ignored, as the invoice workflow declares); most are the
        # late older versions, the rest are sample events overtaken by a resubmission of the
        # same invoice after the shuffle.
        stale_status = {k for k, r in db.inbox().lookup(list(stale)).items() if r["status"] == "stale"}
        assert by_status["stale"] == len(stale) == len(stale_status) and set(stale.values()) == {"ignore"}
        assert len(set(stale) & expect["older_ids"]) > 400
