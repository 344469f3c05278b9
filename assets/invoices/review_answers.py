"""What a reviewer's answer means for an invoice (orchestration/review/hooks.py): approve,
reject or hold; approving an escalated decision to pay runs the payment saga once, under the
event's key, so its actions are idempotent with the batch's."""

from assets.invoices.payment_saga import payment_params, record_settled, saga_executor
from assets.invoices.workflow import EVENT_TYPES, WORKFLOW
from orchestration.review.hooks import ReviewHooks

hooks = ReviewHooks(
    WORKFLOW=WORKFLOW,
    EVENT_TYPES=EVENT_TYPES,
    LABELS=("approve", "reject", "hold"),
    acting_label="approve",
    sagas_of=lambda key, proposal: (
        [payment_params(key, proposal["invoice"], proposal.get("po_amount"))] if "invoice" in proposal else []
    ),
    saga_executor=saga_executor,
    record_settled=record_settled,
    # Refusing to pay means reject; refusing a reject or hold must say what instead (--label).
    refused_label="reject",
)
