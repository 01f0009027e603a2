"""The queue: a job's message carries only its id; PostgreSQL holds the rest.

Sending never loses a job: the row is recorded first, and a message that could not be sent
(Redis away) is sent again by the workers' reconciler (``tasks.maintenance.reconcile``).
"""

from __future__ import annotations

import redis
import structlog
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError

from config.settings import Settings
from tasks.app import celery_config

log = structlog.get_logger(__name__)
TASK_NAME = "airlock.run_job"


class JobQueue:
    """Sends job messages to the fleet's queue (its own Celery app: no task code needed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._celery: Celery | None = None

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = Celery("airlock-client", set_as_current=False)
            self._celery.conf.update(celery_config(self.settings))
        return self._celery

    def enqueue(self, job_id: str, description: str = "") -> bool:
        """Send the job's message; False (logged) when the broker could not take it."""
        try:
            self.celery.send_task(TASK_NAME, args=[job_id], queue=self.settings.queue,
                                  argsrepr=f"('{job_id}') {description}", retry=False)
        except (KombuOperationalError, OSError, redis.exceptions.RedisError) as exc:
            log.warning("submit.enqueue_failed", job_id=job_id, error=str(exc))
            return False
        return True
