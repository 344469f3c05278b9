"""The invoice (accounts payable) workflow, declared once.

`workflow` below is everything the code location, the CLI and the HTTP API know about it
(orchestration/core/workflows.py discovers it): its assets, checks and jobs (jobs.py), its triggers
(triggers.py), its payload models, its saga, review and replay hooks, the ERP it acts on, its
notification routing and its sample.
"""

from assets.invoices import payloads, payment_saga, review_answers, triggers
from assets.invoices.erp import ERPResource, erp_schema
from assets.invoices.jobs import (
    assets,
    calibration_assets,
    checks,
    context_assets,
    invoice_batch_job,
    invoice_context_refresh_job,
    jobs,
    report_assets,
)
from assets.invoices.replay import hook as replay_hook
from assets.invoices.workflow import EVENT_TYPES, NOTIFICATION_ROUTING, WORKFLOW, invoice_batches
from orchestration.core.workflows import SampleHooks, TargetSchema, Workflow, lazy
from resources.defaults import env_or_none

workflow = Workflow(
    name=WORKFLOW,
    event_types=EVENT_TYPES,
    register_payloads=payloads.register,
    assets=assets,
    asset_checks=checks,
    jobs=jobs,
    sensors=triggers.sensors,
    schedules=triggers.schedules,
    sagas=payment_saga,
    reviews=review_answers.hooks,
    replay=replay_hook,
    notification_routing=NOTIFICATION_ROUTING,
    # The ERP this workflow acts on, with its tables' migrations; BOSUN_ERP_DATABASE_URL, else Bosun's database.
    resources={"erp": ERPResource(url=env_or_none("BOSUN_ERP_DATABASE_URL"))},
    target_schemas=(TargetSchema(erp_schema, "erp"),),
    # Imported when a command asks: training and the sample generator are not the code location's.
    sample=SampleHooks(
        prepare=lazy("assets.invoices.demo", "prepare_sample"),
        prepared=lazy("assets.invoices.demo", "sample_prepared"),
        run_demo=lazy("assets.invoices.demo", "run_demo"),
        feed_chunk=lazy("assets.invoices.live_feed", "feed_chunk"),
    ),
)

# What other modules and the tests take from the package; the rest is imported from its module.
__all__ = [
    "workflow",
    "assets",
    "checks",
    "jobs",
    "context_assets",
    "calibration_assets",
    "report_assets",
    "invoice_batches",
    "invoice_batch_job",
    "invoice_context_refresh_job",
]
