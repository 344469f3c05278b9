"""The clocks of a test's Dagster stack moved by `BOSUN_TEST_CLOCK_OFFSET_S` seconds.

A test that starts Dagster processes (`dagster dev`: webserver, daemon, code server, run
workers) while the suite runs with the clock a year ahead puts this directory first on the
stack's PYTHONPATH. `BOSUN_CLOCK_SHIFT_DAYS` alone moves only Bosun's clock: Dagster's own
time (which daily partitions exist, what a backfill may target) would stay on the wall clock
and disagree with the test about which day is today. Python imports `sitecustomize` at
start-up, so every process of the stack, however it was spawned, travels by the same offset.

Except a gRPC code server: grpc's `Server.start()` polls its start-up queue with a deadline of
`time.time()`, which the C core reads on the real clock, so a moved `time.time()` a year ahead
blocks the start for a year. A code server keeps the suite's `BOSUN_CLOCK_SHIFT_DAYS` instead
(Bosun's clock moves, Dagster's does not); the webserver and the daemon, which decide which
partitions exist and create the backfill's runs, and the run workers all travel.
"""

import os
import sys

_offset = os.environ.get("BOSUN_TEST_CLOCK_OFFSET_S")
if _offset:
    _argv = list(getattr(sys, "orig_argv", sys.argv))
    _serves_grpc = "code-server" in _argv or any(_argv[i : i + 2] == ["api", "grpc"] for i in range(len(_argv)))
    if _serves_grpc:
        os.environ["BOSUN_CLOCK_SHIFT_DAYS"] = str(float(_offset) / 86400)
    else:
        # Travelled: `orchestration.core.clock` reads the moved time and must not add the shift
        # again, here or in the processes this one starts.
        os.environ.pop("BOSUN_CLOCK_SHIFT_DAYS", None)
        from datetime import datetime, timedelta, timezone

        import time_machine

        time_machine.travel(datetime.now(timezone.utc) + timedelta(seconds=float(_offset)), tick=True).start()
