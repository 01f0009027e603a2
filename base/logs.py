"""Structured logs: JSON lines (AIRLOCK_LOG_FORMAT=json) or readable console lines.

Airlock's own events (structlog) and every stdlib record (Celery, kombu, Flower, alembic) go
through one handler and one renderer, so a worker's log has one format. Context bound with
``bind_job`` (the job id while a task runs) is merged into both, and Celery's task lines get
their task id, task name and job id lifted out of the message into fields.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
EventDict = MutableMapping[str, Any]
OUR_PACKAGES = ("airlock", "base", "config", "tasks", "workers")


def _celery_fields(_: Any, __: str, event: EventDict) -> EventDict:
    """Celery logs task lines with a dict of values as the record's args (id, name, args)."""
    values = event.pop("positional_args", None)
    if isinstance(values, dict):
        if "id" in values:
            event.setdefault("task_id", values["id"])
        if "name" in values:
            event.setdefault("task", values["name"])
        found = JOB_ID.search(str(values.get("args") or ""))  # argsrepr: "('<job id>') …"
        if found:
            event.setdefault("job_id", found.group(0))
    return event


def _process_name(_: Any, __: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    if record is not None:
        event.setdefault("process", record.processName)
    return event


def setup_logging(fmt: str = "console", level: int = logging.INFO,
                  library_level: int = logging.WARNING) -> None:
    """Route structlog and the standard library through one handler on stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json"
        # Plain tracebacks: the default pretty one prints local variables, secrets included.
        else structlog.dev.ConsoleRenderer(colors=False,
                                           exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _celery_fields],
        pass_foreign_args=True,
        processors=[
            _process_name,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logging.captureWarnings(True)  # Python warnings (Celery's root warning) in the same format
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(library_level)  # third-party libraries: warnings unless a command wants more
    for package in OUR_PACKAGES:
        logging.getLogger(package).setLevel(level)


def _keep(_: Any, __: str, event: EventDict) -> EventDict:
    return event  # the console renderer prints tracebacks itself


def bind_job(job_id: str, **fields: Any) -> None:
    """Carry the job id on every log line of this process/thread until ``unbind_job``."""
    structlog.contextvars.bind_contextvars(job_id=job_id, **fields)


def unbind_job() -> None:
    structlog.contextvars.clear_contextvars()
