"""What makes the invoice workflow a workflow: its name, events, batches and settings."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg

from assets.invoices import payloads
from orchestration.core.lineage import inbox_asset, layer_group
from orchestration.decision.loop import LoopBounds
from orchestration.decision.routing import RoutingPolicy
from orchestration.trigger.batching import BatchPolicy
from orchestration.trigger.calendar import BusinessCalendar
from orchestration.trigger.dead_letters import DeadLetterPolicy
from orchestration.trigger.delivery import DeliveryPolicy
from orchestration.trigger.envelope import PayloadRegistry
from orchestration.trigger.recovery import RecoveryPolicy

WORKFLOW = "invoices"
MODEL_NAME = "invoices"
EVENT_TYPES = [payloads.INVOICE_RECEIVED]
PO_TOLERANCE = Decimal("0.02")
# The router: below `threshold` local confidence ask the LLM (when one is configured);
# text the input guards quarantined never goes to a model that reads it; large amounts
# always get the LLM's second opinion. The daily budget is unlimited unless
# BOSUN_INVOICES_LLM_DAILY_TOKENS / BOSUN_INVOICES_LLM_DAILY_COST (USD) are set.
ROUTING = RoutingPolicy(
    threshold=0.9,
    force={"quarantined_text": "local", "large_amount": "llm"},
    when_budget_spent="local",
    when_llm_unavailable="local",
)
ROUTING_THRESHOLD = ROUTING.threshold

registry = PayloadRegistry()
payloads.register(registry)

# One partition per batch of inbox events, named by its sequence range.
invoice_batches = dg.DynamicPartitionsDefinition(name="invoice_batches")

# Where the lineage starts: the inbox the batches are cut from.
invoice_inbox = inbox_asset("invoice_inbox", WORKFLOW, EVENT_TYPES)

# The ERP tables the payment sagas write and the daily verification reads: between the action
# and the verification layer in the lineage. All of a day's batches feed it, hence the mapping.
erp_payments = dg.AssetSpec(
    "erp_payments",
    group_name=layer_group(WORKFLOW, "action"),
    kinds={"sql"},
    deps=[dg.AssetDep("invoice_actions", partition_mapping=dg.AllPartitionMapping())],
    description="The ERP's ledger entries and payments (and the bank's settlement feed) that the payment "
    "sagas write; reconciled and checked against settlements per day.",
)

# Each batch run is a process of its own that imports Dagster and the code location (2.5-3 s on
# two cores from the queue to its first step): large batches amortise that, and as many runs in
# flight as there are cores keeps them from only contending. A run worker holds its batch (~355
# MiB at 5,000 events, ~150-210 at a few hundred); half the size cost a 100,000-event backlog 16 % of
# its throughput for 75 MiB less per worker (benchmarks/daemon_path.py). A deployment resizes
# it with BOSUN_INVOICES_BATCH_POLICY.
batch_policy = BatchPolicy(max_events=5000, max_wait_seconds=2.0, max_batches_per_tick=20, max_in_flight=2)

# Calibrated confidence at or above the policy's confidence_threshold: act; between this
# and that: re-read the ERP and the policies more broadly, then ask the model again; below:
# review. A proposal a hard rule refuses is asked again once, the rule stated, before the
# rule's outcome stands (orchestration/decision/loop.py): at most three passes per invoice.
ASK_FOR_CONTEXT_THRESHOLD = 0.6
DECISION_LOOP = LoopBounds(max_context_passes=1, max_rule_passes=1)
# Each ERP call is tried 3 times (0.2 s, then 0.4 s apart) before the invoice is
# dead-lettered; more than 50 open dead letters, or one older than a working day, fails a check.
dead_letter_policy = DeadLetterPolicy(attempts=3, backoff_s=0.2, max_open=50, max_oldest_age_s=8 * 3600)

# A batch is run at most 4 times (its first run, Dagster's retries of a run whose worker
# died, the recovery sensor's re-runs; launches that never started count only up to 12);
# then its events still received are dead-lettered. A failed run Dagster said it will
# retry is left to Dagster for a minute.
recovery_policy = RecoveryPolicy(max_runs=4, max_launches=12, dagster_retry_grace_s=60.0)

# The same invoice sent again under a new id within 10 minutes counts once; corrections to
# one invoice (entity) within 2 s count once, with the latest; an invoice event older than
# one already seen for that invoice is not acted on (recorded as stale).
delivery_policies = {payloads.INVOICE_RECEIVED: DeliveryPolicy(content_window_s=600, debounce_s=2.0, stale="ignore")}

# Accounts payable works German business days in Berlin; the year-end close is no business day.
business_calendar = BusinessCalendar(country="DE", subdivision="BE", extra_closures=frozenset({date(2026, 12, 31)}))

# Which channel each recipient type's messages take, and their templates: read by the
# outbox relay (sensors/outbox_relay.py), so changing a channel edits no code.
NOTIFICATION_ROUTING = Path(__file__).with_name("notifications.yaml")
