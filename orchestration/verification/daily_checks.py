"""A workflow's daily check of its targets, one partition per day, and the delayed outcome
judged from a feed per due day, for any workflow.

`build_daily_check`: an asset partitioned by day in the time zone of the team that owns it
(the one its schedule names), materialised with the day's figures, with one check on it. A
day with nothing to judge warns "no data" instead of passing: a pass would prove nothing.

`DueFeed` and `build_due_day_check`: some time after acting, a target's feed reports what
became of each item due on a day (a payment the bank settled, failed or returned). The items
due on the day are judged as of a moment from the reports made by then: not yet due passes,
done by the end of the due day for the right amount passes, anything else fails with the
item's key. Re-running an older day re-reads the feed (a return reported later shows up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

import dagster as dg

from orchestration.core import clock
from orchestration.core.lineage import layer_group


def days(timezone_name: str, start_date: str = "2026-01-01") -> dg.DailyPartitionsDefinition:
    # `end_offset=1`: today is a partition too, so today's effects can be checked before the day closes.
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone=timezone_name, end_offset=1)


@dataclass(frozen=True)
class DayResult:
    """What a daily check found on one day."""

    figures: Mapping[str, Any]  # the materialization's metadata, beside the day
    judged: int  # how many things the day had to judge; none: the check warns "no data"
    passed: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)  # the check's
    description: str | None = None


def aware(dt: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def build_daily_check(
    name: str,
    check: str,
    workflow: str,
    partitions: dg.DailyPartitionsDefinition,
    resource_key: str,
    judge: Callable[[Any, datetime, datetime, datetime], DayResult],
    *,
    deps: Sequence[Any],
    description: str,
    check_description: str,
    no_data: str,
    no_data_figures: Sequence[str],
    day_label: str = "day",
    as_of: bool = False,
    kinds: Sequence[str] = ("sql",),  # what the UI shows it reads
) -> dg.AssetsDefinition:
    """`judge(resource, day start, day end, as of)` for the partition's day. `no_data` says
    what an empty day lacked ("no payment was due"); the figures `no_data_figures` name are
    its check's metadata. `as_of`: the run's config may set the moment judged (an ISO
    timestamp, a re-check "as of" then); default now."""

    @dg.asset(
        name=name,
        partitions_def=partitions,
        group_name=layer_group(workflow, "verification"),
        deps=list(deps),
        kinds=set(kinds),
        required_resource_keys={resource_key},
        config_schema={"as_of": dg.Field(dg.Noneable(str), is_required=False, default_value=None)} if as_of else None,
        check_specs=[dg.AssetCheckSpec(check, asset=name, partitions_def=partitions, description=check_description)],
        description=description,
    )
    def _daily(context):
        configured = (context.op_execution_context.op_config or {}).get("as_of") if as_of else None
        moment = aware(datetime.fromisoformat(configured) if configured else clock.now())
        window = context.partition_time_window
        result = judge(getattr(context.resources, resource_key), window.start, window.end, moment)
        yield dg.MaterializeResult(metadata={day_label: context.partition_key, **result.figures})
        if not result.judged:
            yield dg.AssetCheckResult(
                check_name=check,
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"no data: {no_data} on {context.partition_key}",
                metadata={k: result.figures[k] for k in no_data_figures},
            )
            return
        yield dg.AssetCheckResult(
            check_name=check, passed=result.passed, description=result.description, metadata=dict(result.metadata)
        )

    return _daily


@dataclass(frozen=True)
class DueDay:
    """The verdicts on the items due in a window, as of a moment."""

    due: int
    as_of: str
    by_verdict: dict[str, list[dict]]  # verdict -> the items' details
    failing: int


@dataclass(frozen=True)
class DueFeed:
    """How a feed's reports judge an item due on a day. An item carries its key, `due_on`
    (a date), `amount` and `currency`; a report its `status`, `amount`, `currency`, its
    time (`at`) and maybe a `reason`; an item's latest report is its state."""

    tz: tzinfo  # a due day ends at midnight here
    statuses: Sequence[str]  # every status the feed reports
    done: str = "settled"  # the status that means it happened
    at: str = "settled_at"  # the report's time
    key: str = "idempotency_key"  # the item's key, which the feed's reports name

    @property
    def passing(self) -> tuple[str, ...]:
        return (f"{self.done}_on_time", "not_yet_due")

    @property
    def failing(self) -> tuple[str, ...]:
        other = tuple(s for s in self.statuses if s != self.done)
        return (f"overdue_un{self.done}", *other, f"{self.done}_late", "amount_mismatch")

    def due_by(self, due_on) -> datetime:
        """An item due on a day may be done until that day ends."""
        return datetime.combine(due_on + timedelta(days=1), time(0), tzinfo=self.tz)

    def verdict(self, item: dict, reports: list[dict], as_of: datetime, detail: dict) -> tuple[str, dict]:
        """One item's verdict as of a moment, from the reports made by then; `detail` is what
        the workflow names of the item, to which the latest report's facts are added."""
        deadline = self.due_by(item["due_on"])
        latest = reports[-1] if reports else None
        if latest is None:
            return ("not_yet_due" if as_of < deadline else f"overdue_un{self.done}"), detail
        detail = {**detail, "feed_status": latest["status"], self.at: aware(latest[self.at]).isoformat()}
        if latest["status"] != self.done:
            return latest["status"], {**detail, "reason": latest.get("reason")}
        if Decimal(str(latest["amount"])) != Decimal(str(item["amount"])) or latest["currency"] != item["currency"]:
            return "amount_mismatch", {**detail, f"{self.done}_amount": f"{latest['amount']} {latest['currency']}"}
        if aware(latest[self.at]) >= deadline:
            return f"{self.done}_late", detail
        return f"{self.done}_on_time", detail

    def judge(
        self, due: list[dict], reports: Mapping[str, list[dict]], as_of: datetime, describe: Callable[[dict], dict]
    ) -> DueDay:
        by_verdict: dict[str, list[dict]] = {v: [] for v in self.passing + self.failing}
        for item in due:
            v, detail = self.verdict(item, reports.get(item[self.key], []), as_of, describe(item))
            by_verdict[v].append(detail)
        return DueDay(len(due), as_of.isoformat(), by_verdict, sum(len(by_verdict[v]) for v in self.failing))


def build_due_day_check(
    name: str,
    check: str,
    workflow: str,
    partitions: dg.DailyPartitionsDefinition,
    resource_key: str,
    evaluate: Callable[[Any, datetime, datetime, datetime], DueDay],
    feed: DueFeed,
    *,
    noun: str,
    deps: Sequence[Any],
    description: str,
    check_description: str,
) -> dg.AssetsDefinition:
    """The daily check of the items due each day: `evaluate(resource, day start, day end, as
    of)` judges them (`feed.judge`); `noun` names them in the metadata (`NOUNs_due`,
    `failing_NOUN_keys`, each detail's `NOUN_key`)."""

    def judge(resource, start: datetime, end: datetime, as_of: datetime) -> DayResult:
        result = evaluate(resource, start, end, as_of)
        counts = {v: len(rows) for v, rows in result.by_verdict.items()}
        figures = {"as_of": result.as_of, f"{noun}s_due": result.due}
        failing = {v: [d[f"{noun}_key"] for d in result.by_verdict[v]] for v in feed.failing if result.by_verdict[v]}
        day = start.date().isoformat()  # the partition's day: its window starts in its time zone
        return DayResult(
            {**figures, **counts},
            result.due,
            not result.failing,
            {
                **figures,
                "failing": result.failing,
                **counts,
                f"failing_{noun}_keys": dg.MetadataValue.json({v: k[:100] for v, k in failing.items()}),
                "examples": dg.MetadataValue.json([d for v in feed.failing for d in result.by_verdict[v]][:20]),
            },
            None
            if not result.failing
            else f"{result.failing} of {result.due} {noun}s due {day} not {feed.done} in time",
        )

    return build_daily_check(
        *(name, check, workflow, partitions, resource_key, judge),
        deps=deps,
        description=description,
        check_description=check_description,
        no_data=f"no {noun} was due",
        no_data_figures=("as_of", f"{noun}s_due"),
        day_label="due_day",
        as_of=True,
    )
