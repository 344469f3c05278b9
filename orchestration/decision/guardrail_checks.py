"""Asset checks generated from a workflow's guardrail policy.

Hard guardrails map to an ERROR check, blocking: it fails if any final decision of the
batch breaks a hard rule (whatever a model said, the rule must have held), and a failure
stops the batch before its actions run. Soft guardrails map to a WARN check: it fails if
a decision one flagged was acted on without a person. Both carry, per guardrail, how
often it fired in the batch, so the UI plots activations per guardrail.

Decision records are dicts with `key`, `facts`, `final_decision`, `route` and
`guardrails` (`blocked_by`, `flagged_by`), as the decision layer writes them.
"""

from typing import Callable, Optional

import dagster as dg

from guardrails.engine import Policy, hard_violations


def activation_counts(decisions: list[dict]) -> dict[str, int]:
    """Per guardrail, how many decisions it fired on: in the final verdict, or refusing an
    earlier pass of the decision loop that the model then answered within the policy."""
    counts: dict[str, int] = {}
    for d in decisions:
        fired = dict.fromkeys(d["guardrails"]["blocked_by"] + d["guardrails"]["flagged_by"])
        for earlier in (d.get("decision_loop") or {}).get("passes", [])[:-1]:
            fired.update(dict.fromkeys(earlier["blocked_by"]))
        for name in fired:
            counts[name] = counts.get(name, 0) + 1
    return counts


HARD_CHECK = "hard_guardrails_held"
SOFT_CHECK = "no_soft_flagged_decision_acted_on_unreviewed"


def evaluate_guardrail_checks(
    policy: Policy, decisions: list[dict], limit_overrides: Optional[dict] = None
) -> dict[str, dict]:
    """The two checks' verdicts with per-guardrail figures; pure, for tests too.

    hard: every final decision satisfies every hard rule (and the allowed set), whatever
          any model said; a breach names the guardrail and the decisions.
    soft: no decision a soft guardrail flagged was acted on without a person.
    """
    kinds = policy.rule_names()
    counts = activation_counts(decisions)
    broken: dict[str, list[str]] = {}
    flagged_acted: dict[str, list[str]] = {}
    for d in decisions:
        for name in hard_violations(policy, d["final_decision"], d["facts"], limit_overrides):
            broken.setdefault(name, []).append(d["key"])
        if d["route"] == "act":
            for name in d["guardrails"]["flagged_by"]:
                flagged_acted.setdefault(name, []).append(d["key"])
    out = {}
    for check, kind, bad in ((HARD_CHECK, "hard", broken), (SOFT_CHECK, "soft", flagged_acted)):
        names = [n for n, k in kinds.items() if k == kind]
        out[check] = {
            "passed": not bad,
            "severity": "ERROR" if kind == "hard" else "WARN",
            "activations": {n: counts.get(n, 0) for n in names},
            "violations": {n: len(bad.get(n, [])) for n in names},
            "examples": {n: keys[:10] for n, keys in bad.items()},
        }
    return out


def build_guardrail_checks(
    policy: Policy,
    asset: dg.AssetsDefinition,
    partitions_def: Optional[dg.PartitionsDefinition] = None,
    limit_overrides: Callable[[], Optional[dict]] = lambda: None,
):
    """One step per batch run, two checks: hard guardrails (blocking ERROR: a breach stops
    the batch before its actions) and soft ones (WARN). Two checks rather than one per
    guardrail because every check costs event-log writes per run; each guardrail still
    has its own numeric metadata (`<name>.activations`, `<name>.violations`) to plot."""
    kinds = policy.rule_names()
    specs = [
        dg.AssetCheckSpec(
            HARD_CHECK,
            asset=asset,
            partitions_def=partitions_def,
            blocking=True,
            description="Every final decision satisfies every hard guardrail: "
            + ", ".join(n for n, k in kinds.items() if k == "hard"),
        ),
        dg.AssetCheckSpec(
            SOFT_CHECK,
            asset=asset,
            partitions_def=partitions_def,
            blocking=False,
            description="No decision flagged by a soft guardrail was acted on without a person: "
            + ", ".join(n for n, k in kinds.items() if k == "soft"),
        ),
    ]

    @dg.multi_asset_check(
        name=f"{policy.workflow}_guardrail_checks", specs=specs, ins={"decisions": dg.AssetIn(key=asset.key)}
    )
    def _checks(decisions: list[dict]):
        for name, r in evaluate_guardrail_checks(policy, decisions, limit_overrides()).items():
            metadata: dict = {}
            for rule, n in r["activations"].items():
                metadata[f"{rule}.activations"] = n
                metadata[f"{rule}.violations"] = r["violations"][rule]
            metadata["examples"] = dg.MetadataValue.json(r["examples"])
            yield dg.AssetCheckResult(
                asset_key=asset.key,
                check_name=name,
                passed=r["passed"],
                severity=dg.AssetCheckSeverity.ERROR if r["severity"] == "ERROR" else dg.AssetCheckSeverity.WARN,
                metadata=metadata,
            )

    return _checks
