"""Celery's consumer, which sets aside a task message it cannot run instead of dying on it
(ATTACKS.md F19; ``tasks.broker`` is the transport's part).

A message kombu could build can still break Celery's handling in the worker's main process: a
task name that is not text, no task id (a KeyError, which kombu takes for a lost connection:
the worker reconnects and takes the same message for ever), a body that does not decode. Celery
logs and drops some others (an unknown task, a refused content type), and an argument list the
task cannot take fails only in the pool. So a message is first checked for what this worker
runs, one ``airlock.run_job`` with one job id; what is not is moved to its queue's dead-letter
list and refused. Whatever Celery still raises on a message, but for the broker's own errors,
does the same. A job's message wrongly refused costs a delay, never the job: PostgreSQL still
says queued and the reconciler sends it again.

Chosen with Celery's ``worker_consumer`` (``tasks.app``).
"""

from __future__ import annotations

import time
from typing import Any

import redis
from celery.utils.log import get_logger
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import InconsistencyError, OperationalError
from kombu.utils.json import dumps
from vine import promise

from base.errors import JobNotFound
from base.ids import parse_job_id
from tasks import deadletters
from tasks.broker import DELIVERING, Channel
from tasks.deadletters import DeadLetter, because, escaped
from tasks.queue import TASK_NAME

logger = get_logger(__name__)
# Errors of the broker itself: Celery's consumer reconnects; the message is not at fault.
BROKER_ERRORS = (OSError, redis.exceptions.RedisError, OperationalError, InconsistencyError)


def task_problem(message: Any) -> str | None:
    """Why this worker cannot run ``message`` (a kombu message), or None."""
    headers = message.headers
    task, task_id = headers.get("task"), headers.get("id")
    if not isinstance(task, str) or not isinstance(task_id, str) or not task_id:
        return "not a Celery task message: no task name and id"
    if task != TASK_NAME:
        return f"unknown task {escaped(task, 80)}: this worker runs {TASK_NAME}"
    try:
        body = message.decode()  # the content types the app accepts (JSON)
    except Exception as exc:
        return because("body cannot be decoded", exc)
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list)
            and isinstance(body[1], dict) and isinstance(body[2], dict)):
        return "not a Celery task body: [args, kwargs, options]"
    return job_arguments_problem(body[0], body[1])


def job_arguments_problem(args: list[Any], kwargs: dict[str, Any]) -> str | None:
    if len(args) != 1 or kwargs:
        return f"arguments: one job id expected, got {len(args)} and {len(kwargs)} by name"
    try:
        parse_job_id(args[0])
    except JobNotFound:
        return f"not a job id: {escaped(repr(args[0]), 80)}"
    return None


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def create_task_handler(self, promise: Any = promise) -> Any:
        handle = super().create_task_handler(promise)

        def on_task_received(message: Any) -> Any:
            problem = task_problem(message)
            if problem is None:
                try:
                    return handle(message)
                except BROKER_ERRORS:
                    raise
                except Exception as exc:
                    problem = because("refused by Celery", exc)
            self.set_aside(message, problem)
            return None

        return on_task_received

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        keep(message, because("invalid task message", exc))
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        keep(message, because("body cannot be decoded", exc))
        super().on_decode_error(message, exc)

    def set_aside(self, message: Any, reason: str) -> None:
        keep(message, reason)
        if not message.acknowledged:
            message.reject_log_error(logger, self.connection_errors)


def keep(message: Any, reason: str) -> None:
    """Move the message to the dead-letter list of the queue it came from."""
    where = DELIVERING.get() or str((message.delivery_info or {}).get("routing_key") or "unknown")
    raw = getattr(message, "_raw", None)  # kombu's parsed item, as it was popped
    item = dumps(raw).encode() if raw is not None else bytes(message.body or b"")  # type: ignore[no-untyped-call]
    task_id = message.headers.get("id")
    context = {} if task_id is None else {"task_id": escaped(str(task_id), 80)}
    if isinstance(message.channel, Channel):
        message.channel.set_aside(where, item, reason, **context)
    else:  # not Airlock's transport: it can only be logged
        deadletters.keep(None, DeadLetter.of(where, item, reason, time.time()), **context)
