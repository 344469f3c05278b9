"""The code location: every workflow discovered under `assets/`, merged into one Definitions
with what all workflows share (audit retention, alerts, the notification outbox).

Nothing here names a workflow: each package under `assets/` that declares a `workflow`
(orchestration/core/workflows.py) is found and merged, and what the CLI and the HTTP API need
(payload models, saga, review and replay hooks, schemas) is derived from those declarations.
"""

from __future__ import annotations

import dagster as dg

from orchestration.core.schema_migrations import BOSUN_SCHEMA, SchemaOwner
from orchestration.core.workflows import Workflow, discover
from orchestration.core.workflows import payload_registry as _payload_registry
from resources.channels import load_routing
from resources.defaults import default_resources
from resources.fault_injection import journal_schema
from resources.outbox import outbox_schema
from sensors import alerts, outbox_relay
from sensors import audit as audit_retention

workflows: dict[str, Workflow] = discover()

# Every workflow's notification routing (which channel each recipient type takes, its
# templates): the outbox relay drains the messages of these workflows.
notification_routings = {name: wf.notification_routing for name, wf in workflows.items() if wf.notification_routing}


def make_outbox_relay(outbox, email, bosun_db, **kwargs) -> outbox_relay.OutboxRelay:
    routings = {wf: load_routing(path) for wf, path in notification_routings.items()}
    return outbox_relay.OutboxRelay(outbox, routings, email, review=bosun_db.review_queue(), **kwargs)


def _shared() -> dg.Definitions:
    return dg.Definitions(
        assets=[*audit_retention.assets, outbox_relay.build_outbox_deliveries_asset(make_outbox_relay)],
        jobs=[*audit_retention.jobs],
        sensors=[*alerts.sensors, outbox_relay.build_outbox_relay_sensor(make_outbox_relay)],
        schedules=[*audit_retention.schedules],
    )


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """Every workflow with the environment's resources; `resources` replaces some (tests,
    fault injection) without touching the workflows."""
    workflow_resources = {k: v for wf in workflows.values() for k, v in wf.resources.items()}
    return dg.Definitions.merge(
        _shared(),
        *(wf.definitions() for wf in workflows.values()),
        dg.Definitions(resources={**default_resources(), **workflow_resources, **(resources or {})}),
    )


defs = build_definitions()

# Every workflow's payload models, for triggers that accept any event (CLI, HTTP).
payload_registry = _payload_registry(workflows)

# Every workflow's saga executor and how it records settled sagas, for `bosun saga ...`
# and `bosun review approve`.
saga_workflows = {name: wf.sagas for name, wf in workflows.items() if wf.sagas is not None}

# What a reviewer's answer means per workflow, for `bosun review` and the HTTP review
# endpoints (modules as orchestration/review/answers.py describes).
review_workflows = {name: wf.reviews for name, wf in workflows.items() if wf.reviews is not None}

# Every workflow's replay hook, for `bosun replay`.
replay_workflows = {name: wf.replay for name, wf in workflows.items() if wf.replay is not None}

# Every schema with migrations, for `bosun db revision / check` (the fault-injection journal
# is a test tool's: no database of the code location holds it).
schema_owners = (
    BOSUN_SCHEMA,
    *(t.owner for wf in workflows.values() for t in wf.target_schemas),
    outbox_schema,
    journal_schema,
)


def schema_databases() -> list[tuple[SchemaOwner, str]]:
    """Each schema the code location uses with the database it lives in, for `bosun db`."""
    res = defs.resources
    return [
        (BOSUN_SCHEMA, res["bosun_db"].resolved_url),
        *((t.owner, res[t.resource_key].resolved_url) for wf in workflows.values() for t in wf.target_schemas),
        (outbox_schema, res["outbox"].resolved_url),
    ]
