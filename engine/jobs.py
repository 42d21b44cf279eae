"""Background jobs: long work a request starts and the caller then watches.

Used by spreadsheet imports (``POST .../_import?async=1``).  Design:

* **Where the work runs** -- a small thread pool inside the serve process
  that received the request (``WORKERS`` threads, at most ``MAX_PENDING``
  jobs queued or running).  Not the scheduler: an upload's bytes are already
  in this process's memory, and shipping up to 200 MB through the database
  for a worker process would cost more than the import itself.  The price:
  a job dies with its process (see "interrupted" below).
* **Where the state lives** -- live progress in memory (a dict per job,
  updated every ``PROGRESS_EVERY`` rows: no per-row writes), and a row in
  ``loom_jobs`` (migration ``0006_jobs``) so that any serve process can
  answer ``GET /api/jobs/{id}``: the row is written when the job starts
  (``running``) and when it ends -- for a successful job *in the same
  transaction as its work*, so ``done`` and the imported rows commit
  together.  On PostgreSQL the row's ``processed`` count is also refreshed
  (at most once a second, from a separate connection); on SQLite it cannot
  be -- the import holds the database's only write lock until it commits --
  so another process sees ``running`` without counts until the end.
* **Interrupted jobs** -- a ``queued``/``running`` row that no process has
  touched for ``STALE_AFTER`` is reported as ``failed`` (code
  ``interrupted``): its process stopped; nothing of it was committed.
* **Retention** -- rows finished more than ``KEEP_DAYS`` ago are deleted
  when a new job starts.

A job's ``result`` is exactly the body the synchronous call would have
returned: the 200 body when ``done``, the 422 body (``{"errors": [...]}``)
when ``failed``.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Table, delete, select, update

from .clock import to_db
from .errors import Conflict, RecordInvalid
from .platform import metadata

log = logging.getLogger("loom.jobs")

WORKERS = 2
MAX_PENDING = 8
PROGRESS_EVERY = 1000          # rows between progress reports (the importer's unit; see forms.bulk.run)
DB_PROGRESS_SECONDS = 1.0
STALE_AFTER = dt.timedelta(hours=2)
KEEP_DAYS = 7

jobs = Table(
    "loom_jobs", metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("app", String(64)),
    Column("form", String(64)),
    Column("username", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("processed", Integer, nullable=False, default=0),
    Column("total", Integer),
    Column("result", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Index("ix_loom_jobs_user", "username", "created_at"),
)


class JobRejected(Conflict):
    """Too many jobs at once in this process: try again shortly (the API answers 503 + Retry-After)."""


class Handle:
    """What a running job's work function gets: progress reporting and the final write."""

    def __init__(self, runner: "JobRunner", state: dict):
        self._runner, self._state = runner, state
        self._db_at = 0.0

    @property
    def id(self) -> str:
        return self._state["id"]

    def progress(self, processed: int) -> None:
        """Called every ``PROGRESS_EVERY`` rows: memory now, the row (PostgreSQL) at most once a second."""
        self._state["processed"] = processed
        db = self._runner.rt.db
        if not db.is_sqlite and time.monotonic() - self._db_at >= DB_PROGRESS_SECONDS:
            self._db_at = time.monotonic()
            try:
                with db.engine.begin() as conn:
                    conn.execute(update(jobs).where(jobs.c.id == self.id).values(
                        processed=processed, updated_at=to_db(self._runner.rt.clock.now())))
            except Exception:  # noqa: BLE001 - progress is a courtesy; the import must not fail for it
                log.warning("job %s: progress not saved", self.id, exc_info=True)

    def finish_in(self, conn, result: dict, processed: int, total: int | None) -> None:
        """Mark the job done inside the work's own transaction (commits with it)."""
        conn.execute(update(jobs).where(jobs.c.id == self.id).values(
            status="done", processed=processed, total=total, result=result,
            updated_at=to_db(self._runner.rt.clock.now()), finished_at=to_db(self._runner.rt.clock.now())))


class JobRunner:
    """One per runtime: the pool, the live states, and reads of ``loom_jobs``."""

    def __init__(self, rt):
        self.rt = rt
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="loom-job")
        self._live: dict[str, dict] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, user, work: Callable[[Handle], tuple[dict, int, int | None]], *, app: str | None = None,
               form: str | None = None, total: int | None = None) -> dict:
        """Queue ``work(handle)`` -> (result body, processed, total); returns the job as the API shows it.

        ``work`` raises ``RecordInvalid`` for a failure the user can fix; its
        errors become the job's errors.  It must call ``handle.finish_in``
        inside its transaction.
        """
        with self._lock:
            active = sum(1 for s in self._live.values() if s["status"] in ("queued", "running"))
            if active >= MAX_PENDING:
                raise JobRejected("导入任务过多，请稍后再试 / too many imports running; try again in a minute")
            now = self.rt.clock.now()
            state = {"id": secrets.token_hex(16), "kind": kind, "app": app, "form": form, "username": user.username,
                     "status": "queued", "processed": 0, "total": total, "errors": [], "result": None,
                     "created_at": now, "finished_at": None}
            self._live[state["id"]] = state
            self._forget_old()
        self._pool.submit(self._run, state, work)
        return public(state)

    def _run(self, state: dict, work) -> None:
        handle = Handle(self, state)
        try:
            self._start_row(state)
            state["status"] = "running"
            result, processed, total = work(handle)
            state.update(status="done", processed=processed, total=total, result=result,
                         errors=result.get("errors") or [], finished_at=self.rt.clock.now())
        except RecordInvalid as exc:
            self._failed(state, list(exc.errors))
        except Exception:  # noqa: BLE001 - a bug: logged here, a plain message for the caller
            log.exception("job %s (%s) failed", state["id"], state["kind"])
            self._failed(state, [{"field": None, "code": "internal",
                                  "message": "导入因内部错误中止，未写入任何数据 / the job stopped on an internal error; nothing was written"}])

    def _start_row(self, state: dict) -> None:
        now = to_db(self.rt.clock.now())
        with self.rt.db.write() as conn:
            conn.execute(delete(jobs).where(jobs.c.finished_at < now - dt.timedelta(days=KEEP_DAYS)))
            conn.execute(jobs.insert().values(
                id=state["id"], kind=state["kind"], app=state["app"], form=state["form"], username=state["username"],
                status="running", processed=0, total=state["total"], created_at=to_db(state["created_at"]),
                updated_at=now))

    def _failed(self, state: dict, errors: list[dict]) -> None:
        now = self.rt.clock.now()
        state.update(status="failed", errors=errors, result={"errors": errors}, finished_at=now)
        try:
            with self.rt.db.write() as conn:
                conn.execute(update(jobs).where(jobs.c.id == state["id"]).values(
                    status="failed", processed=state["processed"], result={"errors": errors[:1000]},
                    updated_at=to_db(now), finished_at=to_db(now)))
        except Exception:  # noqa: BLE001 - the in-memory state still tells this process's callers
            log.exception("job %s: final state not saved", state["id"])

    def _forget_old(self) -> None:
        """Drop finished jobs from memory after an hour (the table keeps them)."""
        cutoff = self.rt.clock.now() - dt.timedelta(hours=1)
        for key in [k for k, s in self._live.items() if s["finished_at"] is not None and s["finished_at"] < cutoff]:
            del self._live[key]

    def get(self, job_id: str) -> dict | None:
        """The job as the API shows it: this process's live state, else its row."""
        state = self._live.get(job_id)
        if state is not None:
            return public(state)
        if not job_id or len(job_id) > 40:
            return None
        with self.rt.db.read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            return None
        data = dict(row)
        result = data.get("result")
        data["errors"] = (result or {}).get("errors") or []
        if data["status"] in ("queued", "running") and \
                to_db(self.rt.clock.now()) - data["updated_at"] > STALE_AFTER:
            data["status"] = "failed"
            data["errors"] = [{"field": None, "code": "interrupted",
                               "message": "任务所在的服务进程已停止，未写入任何数据 / the process running this job stopped; nothing was written"}]
            data["result"] = {"errors": data["errors"]}
        return public(data)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def public(state: dict) -> dict:
    """The API's view of a job: ``{id, kind, app, form, username, status, processed, total, errors, result, ...}``."""
    out = {k: state.get(k) for k in ("id", "kind", "app", "form", "username", "status", "processed", "total",
                                      "errors", "result", "created_at", "finished_at")}
    out["errors"] = list(out["errors"] or [])[:1000]
    for k in ("created_at", "finished_at"):
        if isinstance(out[k], dt.datetime):
            v = out[k]
            out[k] = (v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)).isoformat()
    return out


_RUNNERS_LOCK = threading.Lock()


def runner(rt) -> JobRunner:
    """The runtime's job runner (created on first use)."""
    with _RUNNERS_LOCK:
        r = rt.services.get("jobs")
        if r is None:
            r = rt.services["jobs"] = JobRunner(rt)
        return r


def visible_to(job: dict, user) -> bool:
    """Only the user who started a job, or an admin, may see it."""
    return job["username"] == user.username or "admin" in user.roles
