"""The verdict of a freshness policy on an age, for the decision layer to read.

Dagster's freshness daemon judges an asset in the UI; a decision made from a fallback
snapshot needs the same judgement at the moment it is made, on the record itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

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


def materialized_at(instance: dg.DagsterInstance, asset: str) -> datetime | None:
    """When a snapshot asset was last materialized: the moment a fallback to it is aged from."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return datetime.fromtimestamp(event.timestamp, timezone.utc) if event else None
