"""What an evaluation may need besides the record: the clock, the timezone, callbacks."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc


@dataclass(frozen=True)
class EvalContext:
    """Evaluation context.

    ``now`` is an aware datetime (normalised to UTC; a naive one is taken as UTC) from the
    app's injectable clock; ``tz`` is the app timezone (a ``ZoneInfo`` or an IANA name):
    ``today()`` is the local date there and date-times are split into parts there.
    ``changed(field)`` answers ``changed('field')`` in rules, ``exists(form, {field: value})``
    answers ``exists('form', field=value)``. ``extra`` is free for callers and extra functions.
    """

    now: dt.datetime
    tz: Any = UTC
    changed: Callable[[str], bool] | None = None
    exists: Callable[[str, dict], bool] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = self.now
        if not isinstance(now, dt.datetime):
            raise TypeError("EvalContext.now must be a datetime")
        if now.tzinfo is not UTC:          # (aware UTC already -- the usual case -- is kept as it is)
            now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
            object.__setattr__(self, "now", now)
        tz = self.tz
        if tz is None:
            object.__setattr__(self, "tz", UTC)
        elif isinstance(tz, str):
            object.__setattr__(self, "tz", ZoneInfo(tz))

    @cached_property
    def today(self) -> dt.date:
        """The local date in ``tz`` (computed once per context)."""
        return self.now.astimezone(self.tz).date()

    def midnight(self, d: dt.date) -> dt.datetime:
        """00:00 local time on ``d``, as an aware UTC datetime (cached per context)."""
        cache = self.__dict__.get("_midnights")
        if cache is None:
            cache = self.__dict__["_midnights"] = {}
        v = cache.get(d)
        if v is None:
            if len(cache) > 4096:
                cache.clear()
            v = cache[d] = dt.datetime(d.year, d.month, d.day, tzinfo=self.tz).astimezone(UTC)
        return v

    @classmethod
    def system(cls) -> "EvalContext":
        """The real clock in UTC: used when an evaluation gets no context."""
        return cls(now=dt.datetime.now(UTC), tz=UTC)
