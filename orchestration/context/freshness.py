"""The verdict of a freshness policy on an age, for the decision layer to read.

Dagster's freshness daemon judges an asset in the UI; a decision made from a fallback
snapshot needs the same judgement at the moment it is made, on the record itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg


@dataclass(frozen=True)
class FreshnessWindow:
    fail_s: float
    warn_s: float | None = None

    def verdict(self, age_s: float | None) -> str:
        if age_s is None:
            return "unknown"
        if age_s > self.fail_s:
            return "fail"
        if self.warn_s is not None and age_s > self.warn_s:
            return "warn"
        return "fresh"

    def as_dict(self) -> dict:
        return {"fail_after_s": self.fail_s, "warn_after_s": self.warn_s}


def window_of(policy) -> FreshnessWindow | None:
    """The time window of a `FreshnessPolicy.time_window`; None for other kinds (cron)."""
    fail = getattr(policy, "fail_window", None)
    if fail is None:
        return None
    warn = getattr(policy, "warn_window", None)
    return FreshnessWindow(
        fail.to_timedelta().total_seconds(), warn.to_timedelta().total_seconds() if warn is not None else None
    )


def window_of_asset(asset: dg.AssetsDefinition) -> FreshnessWindow | None:
    for spec in asset.specs:
        if spec.freshness_policy is not None:
            return window_of(spec.freshness_policy)
    return None
