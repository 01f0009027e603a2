"""Keeps an attempt's lease alive while its job runs, and turns a cancel into a kill."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import redis
import structlog

from base.errors import AirlockError
from tasks import streams
from tasks.store import JobStore

log = structlog.get_logger(__name__)
CANCEL_POLL_S = 0.2


class LeaseKeeper:
    """A thread that renews the lease every ``lease_s / 3`` and polls for cancellation.

    ``stop`` is set when the job must end now: a cancel request, or the lease lost to a newer
    attempt (then ``stale`` is true and this attempt must not write its result).
    """

    def __init__(self, store: JobStore, r: redis.Redis, job_id: str, attempt: int,
                 lease_s: float) -> None:
        self.store, self.r, self.job_id, self.attempt = store, r, job_id, attempt
        self.lease_s = lease_s
        self.stop = threading.Event()
        self.stale = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id[:8]}",
                                        daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        next_renew = time.monotonic() + self.lease_s / 3
        while not self._done.wait(CANCEL_POLL_S):
            try:
                if self.r.exists(streams.cancel_key(self.job_id)):
                    self.stop.set()
            except redis.exceptions.RedisError:
                pass  # cancellation also arrives through the lease renewal below
            if time.monotonic() < next_renew:
                continue
            try:
                ours, cancel = self.store.renew(self.job_id, self.attempt, self.lease_s)
            except AirlockError as exc:
                log.warning("lease.renew_failed", job_id=self.job_id, error=str(exc))
                next_renew = time.monotonic() + 1.0
                continue
            next_renew = time.monotonic() + self.lease_s / 3
            if not ours:
                self.stale = True
                self.stop.set()
            elif cancel:
                self.stop.set()
