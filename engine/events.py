"""A small synchronous event bus: how engines talk without importing each other.

The record service publishes ``record.created`` / ``record.updated`` /
``record.deleted``; the flow engine publishes ``flow.transition``.  Rules and
flows subscribe.  Handlers run inside the publishing transaction, so their
writes (assignments, outbox rows, timers) commit or roll back with the
change that caused them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Event:
    kind: str                      # 'record.created', 'record.updated', 'record.deleted', 'flow.transition'
    app: str
    form: str
    record: dict                   # the record after the change (before, for deletes)
    old: dict | None = None        # the record before an update
    changed: frozenset[str] = frozenset()
    data: dict[str, Any] = field(default_factory=dict)   # e.g. transition name, from/to state


Handler = Callable[[Event, Any], None]   # (event, unit of work)


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, Handler]]] = defaultdict(list)

    def subscribe(self, kind: str, handler: Handler, order: int = 100) -> None:
        self._handlers[kind].append((order, handler))
        self._handlers[kind].sort(key=lambda pair: pair[0])

    def publish(self, event: Event, uow: Any) -> None:
        for _, handler in self._handlers.get(event.kind, ()):
            handler(event, uow)
