"""The code location: every workflow assembled into one Definitions, plus shared policy.

Only assembly lives here; each workflow module owns its assets, checks, jobs and triggers.
"""

from __future__ import annotations

import dagster as dg

from assets import invoices
from assets.invoices import payloads as invoice_payloads
from assets.invoices import payment_saga as invoice_payment_saga
from assets.invoices import replay as invoice_replay
from assets.invoices import review_answers as invoice_review_answers
from assets.invoices.workflow import NOTIFICATION_ROUTING as invoice_notification_routing
from orchestration.envelope import PayloadRegistry
from orchestration.schema_migrations import BOSUN_SCHEMA, SchemaOwner
from resources.channels import load_routing
from resources.defaults import default_resources
from resources.erp import erp_schema
from resources.fault_injection import journal_schema
from resources.outbox import outbox_schema
from sensors import alerts, outbox_relay
from sensors import audit as audit_retention
from sensors import invoices as invoice_triggers

# Every workflow's notification routing (which channel each recipient type takes, its
# templates): the outbox relay drains the messages of these workflows.
notification_routings = {"invoices": invoice_notification_routing}


def make_outbox_relay(outbox, email, bosun_db, **kwargs) -> outbox_relay.OutboxRelay:
    routings = {wf: load_routing(path) for wf, path in notification_routings.items()}
    return outbox_relay.OutboxRelay(outbox, routings, email, review=bosun_db.review_queue(), **kwargs)


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """Every workflow with the environment's resources; `resources` replaces some (tests,
    fault injection) without touching the workflows."""
    return dg.Definitions(
        assets=[
            *invoices.assets,
            *audit_retention.assets,
            outbox_relay.build_outbox_deliveries_asset(make_outbox_relay),
        ],
        asset_checks=[*invoices.checks],
        jobs=[*invoices.jobs, *audit_retention.jobs],
        sensors=[*invoice_triggers.sensors, *alerts.sensors, outbox_relay.build_outbox_relay_sensor(make_outbox_relay)],
        schedules=[*invoice_triggers.schedules, *audit_retention.schedules],
        resources={**default_resources(), **(resources or {})},
    )


defs = build_definitions()

# Every workflow's payload models, for triggers that accept any event (CLI, HTTP).
payload_registry = PayloadRegistry()
invoice_payloads.register(payload_registry)

# Every workflow's saga executor and how it records settled sagas, for `bosun saga ...`
# and `bosun review approve` (modules with `saga_executor` and `record_settled`).
saga_workflows = {"invoices": invoice_payment_saga}

# What a reviewer's answer means per workflow, for `bosun review` and the HTTP review
# endpoints (modules as orchestration/reviews.py describes).
review_workflows = {"invoices": invoice_review_answers}

# Every workflow's replay hook, for `bosun replay`.
replay_workflows = {"invoices": invoice_replay.hook}

# Every schema with migrations, for `bosun db revision / check` (the fault-injection journal
# is a test tool's: no database of the code location holds it).
schema_owners = (BOSUN_SCHEMA, erp_schema, outbox_schema, journal_schema)


def schema_databases() -> list[tuple[SchemaOwner, str]]:
    """Each schema the code location uses with the database it lives in, for `bosun db`."""
    res = defs.resources
    return [
        (BOSUN_SCHEMA, res["bosun_db"].resolved_url),
        (erp_schema, res["erp"].resolved_url),
        (outbox_schema, res["outbox"].resolved_url),
    ]
