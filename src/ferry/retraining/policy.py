"""When to retrain: a k-of-n persistence filter over drift windows, direct triggers from alerts
(which have their own ``for`` duration), a cron schedule, and a cooldown over all of them so
that a flapping signal cannot start a storm of jobs."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ferry.core.spec import TriggerSpec
from ferry.errors import SpecError

# (low, high) of each cron field; day of week 0-6 from Sunday, 7 is Sunday too.
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@dataclass
class TriggerPolicy:
    spec: TriggerSpec
    history: deque[bool] = field(init=False)
    last_trigger: float | None = None

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.spec.n)

    def cooling(self, now: float) -> bool:
        last = self.last_trigger
        return last is not None and now - last < self.spec.cooldown_s

    def observe(self, signal: bool, now: float | None = None) -> bool:
        """One check (a drift window): True when k of the last n signalled and not cooling."""
        now = time.time() if now is None else now
        self.history.append(signal)
        if sum(self.history) >= self.spec.k:
            return self.fire(now)
        return False

    def fire(self, now: float | None = None) -> bool:
        """A signal strong enough on its own (a firing alert, the schedule), unless cooling."""
        now = time.time() if now is None else now
        if self.cooling(now):
            return False
        self.last_trigger = now
        self.history.clear()  # a new model will serve: its windows start afresh
        return True


def _field_values(text: str, low: int, high: int, what: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise SpecError(f"cron {what}: step {step_text!r} must be a positive whole number")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            start, end = (int(x) for x in base.split("-", 1))
        else:
            start = end = int(base)
            if step is not None:
                end = high
        if not (low <= start <= end <= high):
            raise SpecError(f"cron {what}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step or 1))
    return values


@dataclass(frozen=True)
class CronSchedule:
    """Five-field cron (minute hour day-of-month month day-of-week), evaluated in UTC."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        parts = text.split()
        names = ("minute", "hour", "day of month", "month", "day of week")
        if len(parts) != 5:
            raise SpecError(f"cron {text!r}: expected 5 fields ({', '.join(names)})")
        try:
            sets = [
                frozenset(_field_values(p, lo, hi, n))
                for p, (lo, hi), n in zip(parts, _RANGES, names, strict=True)
            ]
        except ValueError:
            raise SpecError(f"cron {text!r}: fields are numbers, *, a-b, a,b and /step") from None
        weekdays = frozenset(d % 7 for d in sets[4])
        minutes, hours, days, months = sets[:4]
        return cls(minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")

    def matches(self, at: datetime) -> bool:
        if at.minute not in self.minutes or at.hour not in self.hours:
            return False
        if at.month not in self.months:
            return False
        day_ok, weekday_ok = at.day in self.days, (at.isoweekday() % 7) in self.weekdays
        # Cron's rule: when both day fields are restricted, either one may match.
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def next_after(self, after: float) -> float:
        """The first matching minute strictly after ``after`` (epoch seconds)."""
        at = datetime.fromtimestamp(after, UTC).replace(second=0, microsecond=0)
        at += timedelta(minutes=1)
        for _ in range(366 * 24 * 60 * 5):  # five years of minutes: enough for Feb 29
            if self.matches(at):
                return at.timestamp()
            at += timedelta(minutes=1)
        raise SpecError("cron schedule never matches (e.g. 31 February); fix the day fields")
