"""Action layer of the invoice workflow: what an approved invoice's payment saga is given,
what a finished one means, which refusals at execution are decisions, and what the audit
and a reviewer see of a decision. The engine (orchestration/action/batch.py) does the rest."""

from assets.invoices.payment_saga import REFUSAL_DECISIONS, payment_params
from assets.invoices.workflow import WORKFLOW
from orchestration.action.batch import ActionSpec, action_key

ACTIONS = ActionSpec(
    workflow=WORKFLOW,
    saga_params=lambda d: payment_params(d["key"], d["invoice"], d["context_used"].get("po_amount")),
    done_outcome=lambda key: {"decision": "approve", "payment_key": action_key(key, "schedule_payment")},
    done_reason="paid",
    refusal_decisions=REFUSAL_DECISIONS,
    # The facts the model and the guardrails read (no personal data) and the guarded invoice:
    # replay re-decides from them, retraining and the decision report learn from them.
    decision_fields=("context_used", "facts", "invoice"),
    review_proposal=lambda d: {"invoice": d["invoice"], "po_amount": d["context_used"].get("po_amount")},
)
