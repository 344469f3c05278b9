"""Celery settings for Bosun's workers, from the environment (no URL or password in a file).

`dagster_celery.app` imports a module named `dagster_celery_config` when one is importable:
the worker command puts this directory on PYTHONPATH (deploy/Procfile). The broker and result
backend must be the ones the batch job's executor sends to (orchestration/core/executors.py
reads the same variables).
"""

import os

broker_url = os.environ["BOSUN_CELERY_BROKER_URL"]  # redis://HOST:6379/0 or amqp://USER:PASS@HOST:5672//
result_backend = os.environ.get("BOSUN_CELERY_BACKEND_URL", "rpc://")

# One step at a time per worker process: a batch step runs for seconds, and a prefetched
# task would wait behind it while another worker is idle.
worker_prefetch_multiplier = 1

# A step's task is acknowledged once it finished, and given back to the broker if the worker
# process running it died, so another worker runs it (the batch steps are idempotent: events
# are claimed by batch, every action carries an idempotency key).
task_acks_late = True
task_reject_on_worker_lost = True

# Redis only: a task taken by a worker that vanished entirely is redelivered after this many
# seconds (RabbitMQ redelivers as soon as the worker's connection closes). Longer than the
# longest batch step, or a slow step would run twice at once.
broker_transport_options = {
    "visibility_timeout": int(os.environ.get("BOSUN_CELERY_VISIBILITY_TIMEOUT_S", "3600")),
    # Look for such tasks every 5 s (kombu's default sweep is every ~100 s).
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}
