"""A delayed outcome check for any workflow: some time after acting, a target says whether the
action held (a case its customer reopened, a transfer the bank returned). Each failed outcome
is audited and becomes feedback once (an event a reviewer already labelled keeps that label)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import dagster as dg

from orchestration.audit.chain import AuditEntry
from orchestration.core.lineage import layer_group
from orchestration.decision.feedback import FeedbackStore


@dataclass(frozen=True)
class DelayedOutcomes:
    """What the target says now: the events whose outcome failed, and how many were acted on."""

    failed: Sequence[Mapping[str, Any]]  # {"subject": event key, "entity", "detail"}
    acted: int


def build_delayed_outcome_asset(
    name: str,
    workflow: str,
    deps: Sequence[Any],
    read: Callable[[Mapping[str, Any]], DelayedOutcomes],
    resource_keys: Sequence[str],
    max_failed_rate: float,
    description: str,
) -> dg.AssetsDefinition:
    check = f"{name}_within_limit"

    @dg.asset(
        name=name,
        group_name=layer_group(workflow, "verification"),
        deps=list(deps),
        required_resource_keys={"bosun_db", *resource_keys},
        check_specs=[dg.AssetCheckSpec(check, asset=name, description=f"failed share <= {max_failed_rate}")],
        description=description,
    )
    def _outcomes(context):
        r = {k: getattr(context.resources, k) for k in ("bosun_db", *resource_keys)}
        found = read(r)
        store = FeedbackStore(r["bosun_db"].resolved_url)
        labelled = {f["subject"] for f in store.list(workflow)}
        new = [f for f in found.failed if f["subject"] not in labelled]
        reviewer = f"check:{name}"
        rows = [{"workflow": workflow, "subject": f["subject"], "kind": "reject", "label": f"failed:{name}",
                 "reviewer": reviewer, "note": str(f.get("detail", ""))[:500]} for f in new]  # fmt: skip
        store.record_many(rows)
        r["bosun_db"].audit().append(
            [AuditEntry("delayed_outcome", f["subject"], {"check": name, **f}, None) for f in new]
        )
        rate = round(len(found.failed) / max(1, found.acted), 4)
        figures = {"acted": found.acted, "failed": len(found.failed), "failed_rate": rate, "new_feedback": len(new)}
        yield dg.Output(figures, metadata=figures)
        yield dg.AssetCheckResult(
            check_name=check,
            passed=rate <= max_failed_rate,
            metadata={**figures, "examples": dg.MetadataValue.json([dict(f) for f in found.failed[:10]])},
        )

    return _outcomes
