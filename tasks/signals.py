"""The worker main process's Celery signal receivers, connected once by ``connect``."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import structlog
from billiard.exceptions import TimeLimitExceeded
from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from base.logs import bind_job, unbind_job
from config.settings import Settings
from tasks import metrics
from tasks.housekeeping import Housekeeping, clear_pool

log = structlog.get_logger(__name__)


def escalate_after(grace_s: float) -> threading.Timer:
    """Bound a warm shutdown: after ``grace_s`` turn it into a cold one, whose SIGTERM to each
    pool process unwinds its job (container removed, job handed back) and whose broker channel
    restores the unacknowledged messages to the queue."""
    def cold() -> None:
        log.warning("worker.warm_shutdown_timeout", grace_s=grace_s)
        os.kill(os.getpid(), signal.SIGQUIT)

    timer = threading.Timer(grace_s, cold)
    timer.daemon = True
    timer.start()
    return timer


class Receivers:
    """What the main process does on Celery's signals (each receiver checks it is the main
    process: prefork children inherit the connections)."""

    def __init__(self, s: Settings, housekeeping: Housekeeping) -> None:
        self.s, self.housekeeping, self.main_pid = s, housekeeping, os.getpid()

    def _main(self) -> bool:
        return os.getpid() == self.main_pid

    def shutting_down(self, how: str = "", **_: Any) -> None:
        if how == "Warm" and self._main():
            escalate_after(self.s.timeouts.shutdown_grace_s)

    def task_failed(self, exception: Any = None, args: Any = None, **_: Any) -> None:
        if isinstance(exception, TimeLimitExceeded) and args and self._main():
            self.housekeeping.end_hard_timeout(str(args[0]))

    def logging(self, loglevel: Any = None, **_: Any) -> None:
        # base.logs set up the handler; a receiver here keeps Celery from adding its own.
        logging.getLogger().setLevel(loglevel or logging.INFO)

    def prerun(self, task_id: str = "", args: Any = None, **_: Any) -> None:
        bind_job(str(args[0]) if args else "", task_id=task_id)

    def postrun(self, **_: Any) -> None:
        unbind_job()

    def ready(self, sender: Any = None, **_: Any) -> None:
        self.stay_drained(sender)
        try:
            report = self.housekeeping.once()
            log.info("worker.ready", reaped=len(report.removed), seen=report.seen)
        except Exception as exc:
            log.warning("worker.first_sweep_failed", error=str(exc))
        self.housekeeping.start()

    def stay_drained(self, consumer: Any) -> None:
        """A host an operator drained stays drained across restarts: the queue is cancelled
        before the event loop takes its first message (Celery's worker_ready comes after
        ``consume()`` registers the queue, before the loop polls it)."""
        try:
            drained = self.housekeeping.drained()
        except Exception as exc:
            log.warning("worker.drained_unknown", error=str(exc))
            return
        if drained and consumer is not None:
            consumer.cancel_task_queue(self.s.queue)
            log.warning("worker.drained", host=self.s.hostname, queue=self.s.queue,
                        hint="airlock fleet undrain " + self.s.hostname)

    def shutdown(self, **_: Any) -> None:
        self.housekeeping.stop.set()
        if self.s.pool.size > 0 or self.s.holders.mode != "off":
            clear_pool(self.s)
        metrics.disable()


def connect(s: Settings, housekeeping: Housekeeping) -> Receivers:
    r = Receivers(s, housekeeping)
    for sig, receiver in ((worker_shutting_down, r.shutting_down), (task_failure, r.task_failed),
                          (setup_logging, r.logging), (task_prerun, r.prerun),
                          (task_postrun, r.postrun), (worker_ready, r.ready),
                          (worker_shutdown, r.shutdown)):
        sig.connect(receiver, weak=False)
    return r
