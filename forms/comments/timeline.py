"""A record's timeline: its history (changes, transitions, rule firings,
messages, tasks) and its comments, merged in time order.

Bounded: the newest ``limit`` entries of each source are read (two indexed
queries, ``ORDER BY id DESC LIMIT n``), merged, and the newest ``limit`` of
the merge returned -- a record with years of history costs the same as a new
one.  ``more`` tells the caller older entries exist.  Callers have already
checked the user may read the record.
"""
from __future__ import annotations

import datetime as dt

from engine.uow import UnitOfWork

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def _when(entry: dict) -> dt.datetime:
    at = entry.get("at") or "1970-01-01T00:00:00Z"
    return dt.datetime.fromisoformat(str(at).replace("Z", "+00:00"))


def comment_entry(c: dict) -> dict:
    """A comment as a timeline entry (the same keys as history entries, plus the comment's own)."""
    return {"at": c["created_at"], "actor": c["author"], "kind": "comment", "changes": {}, "comment": c["body"],
            "comment_id": c["id"], "mentions": c["mentions"], "can_delete": c["can_delete"]}


def record_timeline(uow: UnitOfWork, form: str, record_id: int, limit: int = DEFAULT_LIMIT) -> tuple[list[dict], bool]:
    """(entries oldest first, whether older entries were left out)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    history = uow.service("records").history(uow, form, record_id, limit=limit + 1)
    comments = uow.runtime.services.get("comments")
    notes = [comment_entry(c) for c in reversed(comments.recent(uow, form, record_id, limit + 1))] if comments else []
    # stable sort: at equal instants history (the change) comes before the comment about it
    merged = sorted(history + notes, key=_when)
    return merged[-limit:], len(merged) > limit
