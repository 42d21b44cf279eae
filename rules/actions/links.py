"""Following link fields one hop in rule expressions (``customer.tier``, ``record.dealer.region``).

A link field's value is the target's id.  In a rule's environment it becomes
a :class:`LinkRef`: still that integer (``values: {customer: customer}``
copies the id, ``customer == 5`` compares it) and also a read-only mapping of
the linked record's fields, loaded on first use -- the expression engine
follows ``a.b`` through mappings only, so ``customer.tier`` just works and
costs a query only when a rule actually reads through the link.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Callable

_UNSET = object()


class LinkRef(int):
    """An id that can be read through: ``ref['tier']`` loads the linked record once."""

    def __new__(cls, value: int, loader: Callable[[], Mapping | None]):
        obj = int.__new__(cls, value)
        obj._loader = loader
        obj._rec = _UNSET
        return obj

    def _record(self) -> Mapping:
        if self._rec is _UNSET:
            self._rec = self._loader() or {}
        return self._rec

    def __getitem__(self, key: str) -> Any:
        return self._record()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._record().get(key, default)

    def keys(self):
        return self._record().keys()

    def items(self):
        return self._record().items()

    def values(self):
        return self._record().values()

    def __iter__(self):
        return iter(self._record())

    def __len__(self) -> int:
        return len(self._record())

    def __contains__(self, key: object) -> bool:
        return key in self._record()

    def __reduce__(self):
        return (int, (int(self),))

    def __repr__(self) -> str:
        return f"LinkRef({int(self)})"


Mapping.register(LinkRef)


class LazyMapping(Mapping):
    """A mapping computed on first use (``owner_user``: no user query unless a rule reads it)."""

    def __init__(self, make: Callable[[], Mapping | None]):
        self._make = make
        self._data: Any = _UNSET

    def _get(self) -> Mapping:
        if self._data is _UNSET:
            self._data = self._make() or {}
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def get(self, key: str, default: Any = None) -> Any:
        # the expressions read names with get(): the mixin's try/except around [] costs more
        return self._get().get(key, default)

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"LazyMapping({dict(self._get())!r})"


def plain(value: Any) -> Any:
    """LinkRef -> int (for writing and JSON)."""
    return int(value) if isinstance(value, LinkRef) else value


def link_env(rc: Any, fd: Any, env: dict, record: Mapping) -> None:
    """Replace the link fields' ids in ``env`` (and ``env['record']``) with :class:`LinkRef`."""
    links = rc.records.link_fields(rc.uow.app, fd)
    if not links:
        return
    rec_view = dict(record)
    for name, target in links:
        value = record.get(name)
        if value is None or isinstance(value, bool):
            continue
        ref = link_ref(rc, target, value)
        if ref is None:
            continue
        env[name] = ref
        rec_view[name] = ref
    env["record"] = rec_view


def link_ref(rc: Any, target: str, value: Any) -> "LinkRef | None":
    """A link field's id as expressions see it: loads the linked record on first use (None: not an id)."""
    try:
        record_id = int(value)
    except (TypeError, ValueError):
        return None
    return LinkRef(record_id, _loader(rc, target, record_id))


def _loader(rc: Any, form: str, record_id: int) -> Callable[[], Mapping | None]:
    # what ``rc.linked`` reads, not ``rc`` itself: the ref goes into ``rc``'s names, and a cycle
    # would leave every run's objects to the garbage collector
    return partial(load_linked, rc._links, rc.records, rc.uow, form, record_id)


def load_linked(links: dict, records: Any, uow: Any, form: str, record_id: Any) -> Mapping | None:
    """The linked record ``(form, record_id)``, once per run (``links``: the run's cache)."""
    if record_id is None:
        return None
    key = (form, record_id)
    if key not in links:
        try:
            links[key] = records.load(uow, form, int(record_id))
        except (TypeError, ValueError):
            links[key] = None
    return links[key]
