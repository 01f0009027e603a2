"""Celery task bodies: a few lines each; the logic lives in plain functions."""

from __future__ import annotations

from typing import Any

import structlog
from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown

from base.errors import DatabaseUnavailable, DockerUnavailable, InfrastructureError, JobNotFound
from base.ids import parse_job_id
from tasks.app import app, settings
from tasks.context import WorkerContext, build_context, start_pool
from tasks.execute import execute_job
from tasks.queue import TASK_NAME

log = structlog.get_logger(__name__)
MAX_INFRA_RETRIES = 5
_context: WorkerContext | None = None


def context() -> WorkerContext:
    global _context
    if _context is None:
        _context = build_context(settings())
        start_pool(_context)
    return _context


@worker_process_init.connect
def _fresh_resources(**_: Any) -> None:
    global _context
    _context = None  # never share the parent's sockets after fork
    if settings().pool.size > 0:
        try:
            context()  # warm the pool before the first job arrives
        except Exception as exc:
            log.warning("pool.start_failed", error=str(exc))


@worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    if _context is not None and _context.pool is not None:
        _context.pool.drain()
    if _context is not None and _context.holders is not None:
        _context.holders.close()


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self: Task, job_id: str) -> str:
    try:
        return execute_job(parse_job_id(job_id), context())
    except JobNotFound:
        log.warning("job.bad_id", job_id=repr(job_id)[:80])  # no such job can exist: dropped
        return "bad_id"
    except InfrastructureError as exc:
        return _retry_or_give_up(self, job_id, exc)
    finally:
        context().admit_next()  # a slot is free again (or never was taken): the next job's


def _retry_or_give_up(task: Task, job_id: str, exc: InfrastructureError) -> str:
    ctx = context()
    if isinstance(exc, DockerUnavailable):
        ctx.reset_engine()
    if task.request.retries >= MAX_INFRA_RETRIES:
        if isinstance(exc, DatabaseUnavailable):
            # Nothing can be recorded now; PostgreSQL still says queued (or running with a
            # lease that will lapse): the reconciler sends the job again once it is back.
            log.warning("job.left_to_reconciler", job_id=job_id, error=str(exc))
            return "deferred"
        ctx.store.fail_queued(job_id, "error", f"infrastructure kept failing: {exc}")
        return "gave_up"
    raise task.retry(exc=exc, countdown=min(30, 2 ** task.request.retries),
                     max_retries=MAX_INFRA_RETRIES) from exc
