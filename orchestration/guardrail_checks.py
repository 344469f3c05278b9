"""Asset checks generated from a workflow's guardrail policy: one per guardrail.

A hard guardrail is an ERROR check, blocking: it fails if any final decision of the batch
breaks the rule (whatever a model said, the rule must have held), and a failure stops
the batch before its actions run. A soft guardrail is a WARN check: it fails if a
decision it flagged was acted on without a person. Every check carries the number of
times its guardrail fired in the batch, so the UI plots activations per guardrail.

Decision records are dicts with `key`, `facts`, `final_decision`, `route` and
`guardrails` (`blocked_by`, `flagged_by`), as the decision layer writes them.
"""

import warnings
from typing import Callable, Optional

import dagster as dg

from guardrails.engine import Policy, hard_violations

warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)


def activation_counts(decisions: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in decisions:
        for name in d["guardrails"]["blocked_by"] + d["guardrails"]["flagged_by"]:
            counts[name] = counts.get(name, 0) + 1
    return counts


def evaluate_guardrail_checks(policy: Policy, decisions: list[dict],
                              limit_overrides: Optional[dict] = None) -> dict[str, dict]:
    """name -> {passed, severity, activations, violations, examples}; pure, for tests too."""
    counts = activation_counts(decisions)
    broken: dict[str, list[str]] = {}
    for d in decisions:
        for name in hard_violations(policy, d["final_decision"], d["facts"], limit_overrides):
            broken.setdefault(name, []).append(d["key"])
    acted_flagged: dict[str, list[str]] = {}
    for d in decisions:
        if d["route"] == "act":
            for name in d["guardrails"]["flagged_by"]:
                acted_flagged.setdefault(name, []).append(d["key"])
    out = {}
    for name, kind in policy.rule_names().items():
        bad = broken.get(name, []) if kind == "hard" else acted_flagged.get(name, [])
        out[name] = {"passed": not bad, "severity": "ERROR" if kind == "hard" else "WARN",
                     "activations": counts.get(name, 0), "violations": len(bad), "examples": bad[:10]}
    return out


def build_guardrail_checks(policy: Policy, asset: dg.AssetsDefinition,
                           partitions_def: Optional[dg.PartitionsDefinition] = None,
                           limit_overrides: Callable[[], Optional[dict]] = lambda: None):
    """One multi-asset check (one step per batch run) with a spec per guardrail."""
    kinds = policy.rule_names()
    descriptions = {r.name: r.description for r in [*policy.hard, *policy.soft, *policy.output]}
    specs = [dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions_def, blocking=kind == "hard",
                               description=(("hard guardrail held: " if kind == "hard" else
                                             "soft guardrail: no flagged decision acted on without a person. ")
                                            + (descriptions.get(name) or name)))
             for name, kind in kinds.items()]

    @dg.multi_asset_check(name=f"{policy.workflow}_guardrail_checks", specs=specs,
                          ins={"decisions": dg.AssetIn(key=asset.key)})
    def _checks(decisions: list[dict]):
        for name, r in evaluate_guardrail_checks(policy, decisions, limit_overrides()).items():
            yield dg.AssetCheckResult(
                asset_key=asset.key, check_name=name, passed=r["passed"],
                severity=dg.AssetCheckSeverity.ERROR if r["severity"] == "ERROR" else dg.AssetCheckSeverity.WARN,
                metadata={"activations": r["activations"], "violations": r["violations"],
                          "examples": dg.MetadataValue.json(r["examples"])})

    return _checks
