"""Reviewers correct a ticket's team and its priority separately: an answer `team=billing`,
`priority=high` or both (`team=billing,priority=high`). Each output's text model is retrained
on the labelled sample plus its corrections behind the engine's "not worse" check (the priority
model learns the priority the text calls for; the CRM's VIP rule is applied on top)."""

import json
from pathlib import Path

from assets.tickets.context import CREATED, UPDATED
from assets.tickets.reasoning import OUTPUTS, PRIORITIES, TEAMS, vip_rule
from orchestration.core.workflows import lazy
from orchestration.decision.feedback_assets import FeedbackLoop, build_feedback_assets
from sensors.feedback import feedback_triggers


def part(answer: str, output: str) -> str | None:
    """This output's value in a reviewer's answer (None when the answer does not correct it)."""
    return dict(p.split("=", 1) for p in answer.split(",") if "=" in p).get(output)


def sample(output: str):
    def read(training_dir: Path) -> tuple[list[dict], list[str]]:
        data = json.loads((training_dir / "tickets.json").read_text())
        return [{"text": t} for t in data["texts"]], data[output]

    return read


def loop(output: str, labels, learns) -> FeedbackLoop:
    return FeedbackLoop(
        *("tickets", [CREATED, UPDATED], OUTPUTS[output], labels),
        features=lambda facts: {"text": facts.get("model_text", ""), "vip": bool(facts.get("vip"))},
        sample_examples=sample(output),
        asset_prefix=f"ticket_{output}",
        proposed_of=lambda record: record.get(output) or record["proposed"],
        learns=learns,
        # Imported when a retrain runs: scikit-learn stays out of the code location's load.
        pipeline=lazy("orchestration.decision.text_model", "text_pipeline"),
    )


team = loop("team", TEAMS, lambda answer, f: part(answer, "team"))
priority = loop("priority", PRIORITIES, lambda answer, f: vip_rule(part(answer, "priority") or "", f["vip"], -1))
assets = [*build_feedback_assets(team), *build_feedback_assets(priority)]
# ticket_feedback_sensor runs it once BOSUN_TICKETS_RETRAIN_MIN_FEEDBACK (default 100) new reviewed answers exist.
job, sensor = feedback_triggers("ticket", team, assets, "Retrain the team and priority models on reviewed answers.")
