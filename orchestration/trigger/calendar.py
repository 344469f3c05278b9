"""Business calendars for schedules: public holidays (the `holidays` package) plus closures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a schedule asks about a day: run workers load without it
    import holidays


@dataclass(frozen=True)
class BusinessCalendar:
    country: str = "DE"
    subdivision: str | None = None
    extra_closures: frozenset[date] = field(default_factory=frozenset)  # e.g. the year-end close
    weekend: frozenset[int] = frozenset({5, 6})  # Saturday, Sunday

    @cached_property
    def _holidays(self) -> holidays.HolidayBase:
        import holidays

        return holidays.country_holidays(self.country, subdiv=self.subdivision)

    def closed_because(self, day: date) -> str | None:
        if day in self.extra_closures:
            return "closure day"
        if day.weekday() in self.weekend:
            return "weekend"
        name = self._holidays.get(day)
        return f"public holiday ({name})" if name else None

    def is_business_day(self, day: date) -> bool:
        return self.closed_because(day) is None

    def previous_business_day(self, day: date) -> date:
        day -= timedelta(days=1)
        while not self.is_business_day(day):
            day -= timedelta(days=1)
        return day
