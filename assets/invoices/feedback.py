"""The invoice workflow's feedback loop (the engine's assets, orchestration/decision/feedback_assets.py):
what its local model may answer, its features and the labelled sample it started from."""

from pathlib import Path

from assets.invoices.context import model_features
from assets.invoices.training import labelled_examples, scratch_erp
from assets.invoices.workflow import EVENT_TYPES, MODEL_NAME, WORKFLOW
from orchestration.decision.feedback_assets import FeedbackLoop, build_feedback_assets
from orchestration.decision.model_quality import PromotionRule


def sample_examples(directory: Path) -> tuple[list[dict], list[str]]:
    """The labelled sample the model started from, decided against its own scratch ERP."""
    if not (directory / "labels.jsonl").exists():
        return [], []
    with scratch_erp(directory) as erp:
        return labelled_examples(erp, directory)


# The feedback sensor runs the loop once BOSUN_INVOICES_RETRAIN_MIN_FEEDBACK (default 100) new
# reviewed labels exist; three in ten reviewed events are held out to judge the retrained model.
feedback_loop = FeedbackLoop(
    workflow=WORKFLOW,
    event_types=EVENT_TYPES,
    model_name=MODEL_NAME,
    labels=("approve", "hold", "reject"),  # the decision prompt's enum
    features=model_features,
    sample_examples=sample_examples,
    asset_prefix="invoice",
    held_out_fraction=0.3,
    promotion=PromotionRule(max_accuracy_drop=0.0, max_brier_rise=0.0, min_held_out=20),
    default_min_feedback=100,
)

invoice_feedback, invoice_model_candidate, invoice_local_model = build_feedback_assets(feedback_loop)
