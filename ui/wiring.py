"""Building a runtime with every engine plugged in.

This is the one place that knows all engines: the core (``engine``) never
imports them, and engines don't import each other.  Each engine package may
expose ``setup(runtime)`` to register its services and event handlers.
"""
from __future__ import annotations

import importlib

from engine.clock import Clock
from engine.files import purge_abandoned_uploads
from engine.outbox import deliver_due
from engine.scheduler import Scheduler, register_tick_step
from engine.runtime import Runtime

ENGINES = ("forms", "flows", "rules", "reports")


def load_engines() -> list:
    """Import the engines (registers their compile steps and install hooks)."""
    return [importlib.import_module(name) for name in ENGINES]


def build_runtime(db_url: str | None = None, clock: Clock | None = None, start: bool = True) -> Runtime:
    modules = load_engines()
    rt = Runtime(db_url, clock)
    rt.services["scheduler"] = Scheduler(rt)
    register_tick_step(deliver_due)
    register_tick_step(purge_abandoned_uploads)
    for mod in modules:
        setup = getattr(mod, "setup", None)
        if setup is not None:
            setup(rt)
    return rt.start() if start else rt
