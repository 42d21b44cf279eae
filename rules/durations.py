"""Durations (``30m``, ``4h``, ``3d``, ``1h30m``, ``2w``, ``-7d``) and times of day (``09:00``)."""
from __future__ import annotations

import datetime as dt
import re

_PART = re.compile(r"(\d+)([wdhms])")
_FULL = re.compile(r"^[+-]?(\d+[wdhms])+$")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str | int | None) -> dt.timedelta:
    """``'1h30m'`` -> timedelta; ``'-7d'`` is negative.  Raise ValueError with a usable message."""
    if isinstance(text, bool) or text is None:
        raise ValueError("expected a duration such as '30m', '4h', '3d' or '1h30m'")
    if isinstance(text, int):
        return dt.timedelta(days=text)
    s = str(text).strip().replace(" ", "")
    if not _FULL.match(s):
        raise ValueError(f"'{text}' is not a duration: write e.g. '30m', '4h', '3d', '1h30m' or '-7d'")
    sign = -1 if s.startswith("-") else 1
    total = dt.timedelta()
    for n, unit in _PART.findall(s):
        total += dt.timedelta(**{_UNITS[unit]: int(n)})
    return sign * total


def parse_time_of_day(text: str) -> dt.time:
    m = re.match(r"^(\d{1,2}):(\d{2})$", str(text).strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"'{text}' is not a time of day: write HH:MM, e.g. '09:00'")
    return dt.time(int(m.group(1)), int(m.group(2)))


def format_duration(delta: dt.timedelta) -> str:
    secs = int(delta.total_seconds())
    sign = "-" if secs < 0 else ""
    secs = abs(secs)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            out.append(f"{secs // size}{unit}")
            secs %= size
    return sign + ("".join(out) or "0s")
