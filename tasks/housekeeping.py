"""The worker main process's housekeeping thread: reaper sweeps, broker reconciliation,
retention, and the health file; and the end of a job whose pool process hit the hard limit."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import structlog

from base.errors import AirlockError
from base.ids import parse_job_id
from config.settings import Settings
from tasks import admission, egress_access, hosts, maintenance, metrics, retention, streams, usage
from tasks.context import host_slots
from tasks.heartbeat import Heartbeat
from tasks.outputs import Outputs
from tasks.queue import JobQueue
from tasks.store import JobStore, Outcome, make_engine
from workers import engine, holders, pool
from workers.runner import Beside
from workers.slots import Slots
from workers.storage import volumes_for

log = structlog.get_logger(__name__)
RECONCILE_LOCK = "airlock:lock:reconcile"


class Housekeeping:
    """One thread of the worker's main process, every ``reaper_interval_s``."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="airlock-maintenance", daemon=True)
        self._store: JobStore | None = None
        self._redis: redis.Redis | None = None
        self.queue = JobQueue(s)
        self.api: Any = None  # one engine client for the process, remade after a failure
        self._slots: Slots | None = None
        self.heartbeat = Heartbeat(s)
        self._outputs: Outputs | None = None

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(make_engine(self.s.database_url))
        return self._store

    @property
    def outputs(self) -> Outputs:
        """Where outputs kept whole are (retention deletes a job's objects before its rows)."""
        if self._outputs is None:
            self._outputs = Outputs.for_settings(self.store.engine, self.s)
        return self._outputs

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = streams.connect(self.s.redis_url, self.s.sentinel_master)
        return self._redis

    def start(self) -> None:
        self.thread.start()
        if self.s.egress.enabled:  # tenants' endpoints to the proxy, every few seconds
            egress_access.TenantSync(self.s, self.store.engine, self.stop).start()

    def close(self) -> None:
        """Let go of the connections (the thread, if started, must be stopped first)."""
        if self._store is not None:
            self._store.engine.dispose()
        if self._redis is not None:
            self._redis.close()
        if self.api is not None:
            self.api.close()
            self.api = None

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except Exception as exc:
                self.api = None
                log.warning("maintenance.failed", error=str(exc))
            self.stop.wait(self.s.upkeep.reaper_interval_s)

    def once(self) -> maintenance.SweepReport:
        s = self.s
        if self.api is None:
            self.api = engine.connect(s.docker_host)
        volumes = volumes_for(s.storage, s.sandbox.volumes_root)
        if self._slots is None:
            self._slots = host_slots(s, engine.engine_id(self.api))
        report = maintenance.sweep(self.api, self.store, s, volumes, enqueue=self.queue.enqueue,
                                   slots=self._slots)
        metrics.reaped(str(removal.reason) for removal in report.removed)
        metrics.containers_running(v.role for v in report.left if v.running)
        self._reconcile()
        if s.egress.enabled:
            egress_access.sweep(s, self.store)
        self.heartbeat.gauges(self.redis)
        self.heartbeat.beat(self.store.engine, self.api, report.left)
        # The fleet's slots as this heartbeat says them: fill what is free (a backstop for an
        # admission a submitter or a worker could not make).
        admission.admit(self.store.engine, s, self.queue.enqueue)
        metrics.tenants(usage.figures(self.store.engine, datetime.now(UTC).date()),
                        s.tenancy.metrics_tenants)
        try:
            retention.run_if_due(self.store, self.redis, s, self.outputs)
        except AirlockError as exc:
            log.warning("retention.failed", error=str(exc))
        if s.upkeep.health_file:
            Path(s.upkeep.health_file).touch()  # compose's healthcheck: engine, SQL, Redis all answered
        return report

    def _reconcile(self) -> None:
        """One worker of the fleet at a time re-enqueues what the broker lost."""
        lock = self.redis.lock(RECONCILE_LOCK, timeout=self.s.upkeep.reaper_interval_s * 2,
                               blocking=False)
        if not lock.acquire():
            return
        try:
            maintenance.reconcile(self.store, self.redis, self.s, self.queue.enqueue)
        finally:
            try:
                lock.release()
            except Exception:
                pass  # expired meanwhile: the next holder takes over

    def drained(self) -> bool:
        """Whether an operator drained this host (``airlock fleet drain``): its worker then
        starts without consuming its queue. Also says the worker joined (its row, at once)."""
        if self.api is None:
            self.api = engine.connect(self.s.docker_host)
        self.heartbeat.beat(self.store.engine, self.api, starting=True)
        return hosts.is_drained(self.store.engine, self.s.hostname)

    def end_hard_timeout(self, job_id: str) -> None:
        """Celery's hard time limit killed the pool process running this job (it was stuck:
        the job's own timeout and the container's deadline come well before). The job ends
        as an error rather than run again; its container's launcher has already killed it and
        the reaper removes it. Only the job's current attempt, and only if this host claimed
        it: an attempt that took the job over elsewhere is not ended by a stuck stale one."""
        error = (f"the worker process exceeded Celery's hard time limit"
                 f" ({self.s.hard_time_limit_s:g} s) and was killed; not retried")
        try:
            row = self.store.get(parse_job_id(job_id))
            if row.status != "running" or row.worker_host != self.s.hostname:
                return
            if self.store.finish(job_id, row.attempt, Outcome(verdict="error", error=error), 0):
                log.error("job.hard_time_limit", job_id=job_id, attempt=row.attempt)
                streams.publish_end(self.redis, job_id, {"verdict": "error"}, self.s.streams.ttl_s)
        except AirlockError as exc:
            log.warning("job.hard_time_limit_unrecorded", job_id=job_id, error=str(exc))


def clear_pool(s: Settings) -> None:
    """Remove the warm containers and namespace holders this worker's processes kept (a SIGTERM
    ends a prefork child before its own clean-up); those a job was given are the reaper's."""
    owner = pool.owner_label(s.hostname, os.getpid())
    try:
        store = JobStore(make_engine(s.database_url))
        try:
            api = engine.connect(s.docker_host)
            beside = Beside(volumes_for(s.storage, s.sandbox.volumes_root), s.sandbox.io_dir,
                            s.sandbox.spool_dir, host_slots(s, engine.engine_id(api)))
            removed = pool.remove_idle(api, fleet=s.fleet, owner=owner, beside=beside,
                                       busy=store.jobs_by_container)
            removed += holders.remove_owned(api, fleet=s.fleet, owner=owner)
        finally:
            store.engine.dispose()
        log.info("pool.cleared", removed=removed)
    except Exception as exc:
        log.warning("pool.clear_failed", error=str(exc))
