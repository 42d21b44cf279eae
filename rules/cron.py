"""A small, strict cron parser: ``minute hour day-of-month month day-of-week``, in the app's timezone.

Supports ``*``, numbers, ranges ``1-5``, lists ``1,15``, steps ``*/15`` and
``10-20/2``, month and weekday names (``jan``, ``mon``), ``7`` as Sunday, and
the shortcuts ``@hourly @daily @weekly @monthly @yearly``.  Like Vixie cron,
when both day-of-month and day-of-week are restricted a day matching either
one fires.  Local times that don't exist (DST gaps) are skipped; ambiguous
ones (DST overlaps) fire once, at the first occurrence.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

_SHORTCUTS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
              "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 7, _DAYS))


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]       # 0 = Sunday
    dom_any: bool
    dow_any: bool

    def _day_ok(self, d: dt.date) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.dom_any and self.dow_any:
            return True
        if self.dom_any:
            return dow
        if self.dow_any:
            return dom
        return dom or dow

    def next_after(self, after: dt.datetime, tz: ZoneInfo | str) -> dt.datetime:
        """The first firing strictly after ``after`` (aware), as an aware UTC datetime."""
        tz = ZoneInfo(tz) if isinstance(tz, str) else tz
        local = after.astimezone(tz)
        day = local.date()
        start_minute = local.replace(second=0, microsecond=0, tzinfo=None) + dt.timedelta(minutes=1)
        for _ in range(366 * 5):
            if self._day_ok(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        naive = dt.datetime(day.year, day.month, day.day, h, m)
                        if naive < start_minute:
                            continue
                        aware = naive.replace(tzinfo=tz, fold=0)
                        # skip non-existent local times (DST gap): they don't round-trip
                        if aware.astimezone(dt.timezone.utc).astimezone(tz).replace(tzinfo=None) != naive:
                            continue
                        utc = aware.astimezone(dt.timezone.utc)
                        if utc > after:
                            return utc
            day += dt.timedelta(days=1)
        raise CronError(f"cron '{self.text}' never fires")


def _parse_field(part: str, name: str, lo: int, hi: int, names: dict) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    any_ = part == "*" or part == "?"
    for item in part.split(","):
        if not item:
            raise CronError(f"{name}: empty list item in '{part}'")
        rng, _, step_s = item.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) == 0:
                raise CronError(f"{name}: step '{step_s}' must be a positive whole number")
            step = int(step_s)
        if rng in ("*", "?"):
            a, b = lo, hi if name != "day of week" else 6
        elif "-" in rng:
            a_s, b_s = rng.split("-", 1)
            a, b = _value(a_s, name, lo, hi, names), _value(b_s, name, lo, hi, names)
            if a > b:
                raise CronError(f"{name}: range '{rng}' goes backwards")
        else:
            a = _value(rng, name, lo, hi, names)
            b = hi if step_s else a
        values.update(range(a, b + 1, step))
    if name == "day of week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values), any_


def _value(s: str, name: str, lo: int, hi: int, names: dict) -> int:
    s = s.strip().lower()
    if s in names:
        return names[s]
    if not s.isdigit():
        raise CronError(f"{name}: '{s}' is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    v = int(s)
    if not lo <= v <= hi:
        raise CronError(f"{name}: {v} is out of range {lo}-{hi}")
    return v


def parse_cron(text: str) -> Cron:
    """Parse; raise :class:`CronError` with an analyst-readable message."""
    src = str(text).strip()
    expanded = _SHORTCUTS.get(src.lower(), src)
    parts = expanded.split()
    if len(parts) != 5:
        raise CronError(f"cron '{src}' must have 5 fields: minute hour day-of-month month day-of-week "
                        f"(e.g. '0 2 * * *' = every day at 02:00)")
    parsed = [_parse_field(p, *spec) for p, spec in zip(parts, _FIELDS)]
    return Cron(src, parsed[0][0], parsed[1][0], parsed[2][0], parsed[3][0], parsed[4][0], parsed[2][1], parsed[4][1])
