"""ASGI entry point for ``uvicorn ui.asgi:app`` (used by ``loom serve``).

Each uvicorn worker process builds its own runtime from the environment;
unless ``LOOM_SCHEDULER=0``, it also runs the scheduler loop in a background
thread (several processes may: timers are claimed with row locks).
"""
from __future__ import annotations

import os
import threading

from ui.app import create_app
from ui.wiring import build_runtime

runtime = build_runtime(os.environ.get("LOOM_DATABASE_URL"))
app = create_app(runtime)


@app.on_event("startup")
def _start_scheduler() -> None:
    scheduler = runtime.services.get("scheduler")
    if scheduler is not None and os.environ.get("LOOM_SCHEDULER", "1") != "0":
        threading.Thread(target=scheduler.run_forever, kwargs={"interval": 1.0}, daemon=True, name="loom-scheduler").start()
