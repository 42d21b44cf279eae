"""The flow engine: workflows (states, transitions, approvals, SLAs) and journeys.

Importing this package registers its compile step (``flows/*.yaml``), its
timer handlers and its after-install hook (explicit migration of running
instances); ``setup(runtime)`` registers ``runtime.services['flows']`` and
subscribes to record events.
"""
from __future__ import annotations

from engine.installer import register_after_install
from engine.scheduler import register_timer_handler

from . import compiler  # noqa: F401  (registers the compile step)
from . import journeys, sla
from .migrate import migrate_instances
from .service import AFTER_KIND, REMIND_KIND, FlowService


def _service(uow):
    return uow.runtime.services["flows"]


register_timer_handler(sla.TIMER_KIND, lambda uow, timer: sla.fire(uow, _service(uow), timer))
register_timer_handler(journeys.TIMER_KIND, lambda uow, timer: journeys.fire(uow, _service(uow), timer))
register_timer_handler(AFTER_KIND, lambda uow, timer: _service(uow).fire_after(uow, timer))
register_timer_handler(REMIND_KIND, lambda uow, timer: _service(uow).fire_reminder(uow, timer))
register_after_install("flows", migrate_instances, order=40)


def setup(runtime) -> None:
    service = FlowService(runtime)
    runtime.services["flows"] = service
    # after the rules' pre-save phase (order 50), which sees the record as given, as before
    runtime.bus.subscribe("record.saving", service.on_saving, order=90)
    runtime.bus.subscribe("record.created", service.on_created, order=10)
    runtime.bus.subscribe("record.updated", service.on_updated, order=10)
    runtime.bus.subscribe("record.deleted", service.on_deleted, order=10)
