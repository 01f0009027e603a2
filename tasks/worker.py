"""``airlock worker``: checks the host, reaps what earlier workers left, then serves jobs."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
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

from airlock.errors import AirlockError, HostNotSafe
from airlock.logs import bind_job, unbind_job
from config.settings import Settings
from tasks import egress, maintenance, metrics, preflight, retention, streams
from tasks.app import app, configure
from tasks.client import Airlock
from tasks.store import JobStore, Outcome, make_engine
from workers import engine, holders, pool
from workers.storage import volumes_for

log = structlog.get_logger(__name__)
RECONCILE_LOCK = "airlock:lock:reconcile"


class Maintenance:
    """The main process's housekeeping thread: reaper sweeps and broker reconciliation."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="airlock-maintenance", daemon=True)
        self.client: Airlock | None = None
        self.api: Any = None  # one engine client for the process, remade after a failure

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except Exception as exc:
                self.api = None
                log.warning("maintenance.failed", error=str(exc))
            self.stop.wait(self.s.reaper_interval_s)

    def once(self) -> maintenance.SweepReport:
        s = self.s
        if self.client is None:
            self.client = Airlock(s)
        client = self.client
        if self.api is None:
            self.api = engine.connect(s.docker_host)
        api = self.api
        volumes = volumes_for(s.storage, s.volumes_root, s.job_uid, s.job_gid)
        report = maintenance.sweep(api, client.store, s, volumes, enqueue=client.enqueue)
        metrics.reaped(str(removal.reason) for removal in report.removed)
        metrics.containers_running(v.role for v in report.left if v.running)
        lock = client.redis.lock(RECONCILE_LOCK, timeout=s.reaper_interval_s * 2,
                                 blocking=False)
        if lock.acquire():
            try:
                maintenance.reconcile(client.store, client.redis, s, client.enqueue)
            finally:
                try:
                    lock.release()
                except Exception:
                    pass
        try:
            retention.run_if_due(client.store, client.redis, s)
        except AirlockError as exc:
            log.warning("retention.failed", error=str(exc))
        if s.health_file:
            Path(s.health_file).touch()  # compose's healthcheck: engine, SQL, Redis all answered
        return report

    def end_hard_timeout(self, job_id: str) -> None:
        """Celery's hard time limit killed the pool process running this job (it was stuck:
        the job's own timeout and the container's deadline come well before). The job ends
        as an error rather than run again; its container's launcher has already killed it and
        the reaper removes it. Only the job's current attempt, and only if this host claimed
        it: an attempt that took the job over elsewhere is not ended by a stuck stale one."""
        if self.client is None:
            self.client = Airlock(self.s)
        error = (f"the worker process exceeded Celery's hard time limit"
                 f" ({self.s.hard_time_limit_s:g} s) and was killed; not retried")
        try:
            record = self.client.store.get(job_id)
            if record.status != "running" or record.worker_host != self.s.hostname:
                return
            outcome = Outcome(verdict="error", error=error)
            if self.client.store.finish(job_id, record.attempt, outcome, 0):
                log.error("job.hard_time_limit", job_id=job_id, attempt=record.attempt)
                streams.publish_end(self.client.redis, job_id, {"verdict": "error"},
                                    self.s.stream_ttl_s)
        except AirlockError as exc:
            log.warning("job.hard_time_limit_unrecorded", job_id=job_id, error=str(exc))


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


def clear_pool(s: Settings) -> None:
    """Remove the warm containers and namespace holders this worker's processes kept (a SIGTERM
    ends a prefork child before its own clean-up); those a job was given are the reaper's."""
    try:
        store = JobStore(make_engine(s.database_url))
        try:
            removed = pool.remove_idle(
                engine.connect(s.docker_host), fleet=s.fleet,
                owner=pool.owner_label(s.hostname, os.getpid()),
                volumes=volumes_for(s.storage, s.volumes_root, s.job_uid, s.job_gid),
                io_dir=s.io_dir, busy=lambda ids: store.jobs_by_container(ids))
            removed += holders.remove_owned(engine.connect(s.docker_host), fleet=s.fleet,
                                            owner=pool.owner_label(s.hostname, os.getpid()))
        finally:
            store.engine.dispose()
        log.info("pool.cleared", removed=removed)
    except Exception as exc:
        log.warning("pool.clear_failed", error=str(exc))


def check_host(s: Settings) -> Settings:
    """Fail closed before taking jobs: the engine answers, has the runtime, and the disk bound
    holds; with egress, the networks and the proxy are up (the preflight then verifies the
    firewall). Returns the settings with the runtime resolved (empty: the engine's default,
    by name)."""
    api = engine.connect(s.docker_host)
    s = s.model_copy(update={"runtime": engine.runtime_for(api, s.runtime)})
    if s.egress_enabled:
        egress.prepare_host(s, api)
    volumes_for(s.storage, s.volumes_root, s.job_uid, s.job_gid).check()
    JobStore(make_engine(s.database_url)).engine.dispose()
    streams.connect(s.redis_url).ping()
    return s


def start_worker(s: Settings, *, concurrency: int | None = None,
                 extra: list[str] | None = None) -> None:
    if concurrency:
        s = s.model_copy(update={"concurrency": concurrency})
    try:
        s = check_host(s)
    except (HostNotSafe, AirlockError) as exc:
        print(f"airlock worker: refusing to start: {exc}", file=sys.stderr)
        sys.exit(3)
    except Exception as exc:
        print(f"airlock worker: refusing to start: {exc}", file=sys.stderr)
        sys.exit(3)
    if s.metrics_port is not None:
        try:
            metrics.enable(metrics.prepare_directory(s.metrics_dir))  # before the pool forks
            metrics.serve(s.metrics_port, s.metrics_address)
        except OSError as exc:
            print(f"airlock worker: refusing to start: metrics endpoint: {exc}", file=sys.stderr)
            sys.exit(3)
    checked = preflight.run(s)  # canary jobs through the runner: is a job contained here?
    metrics.set_preflight(checked.ok)
    for canary in checked.canaries:
        metrics.set_preflight(canary.contained, canary.name)
    if not checked.ok:
        print(f"airlock worker: refusing to start: preflight: {'; '.join(checked.failures)}",
              file=sys.stderr)
        sys.exit(3)
    print(f"airlock worker: {checked.summary()}", file=sys.stderr)
    for name, line in checked.runtime.items():
        if not line.startswith("ok"):
            print(f"airlock worker: {name}: {line}", file=sys.stderr)
    configure(s)
    housekeeping = Maintenance(s)
    main_pid = os.getpid()

    @worker_shutting_down.connect(weak=False)
    def _bounded(how: str = "", **_: Any) -> None:
        if how == "Warm" and os.getpid() == main_pid:
            escalate_after(s.shutdown_grace_s)

    @task_failure.connect(weak=False)
    def _hard_limit(exception: Any = None, args: Any = None, **_: Any) -> None:
        if isinstance(exception, TimeLimitExceeded) and args and os.getpid() == main_pid:
            housekeeping.end_hard_timeout(str(args[0]))

    @setup_logging.connect(weak=False)
    def _logging(loglevel: Any = None, **_: Any) -> None:
        # airlock.logs set up the handler; a receiver here keeps Celery from adding its own.
        logging.getLogger().setLevel(loglevel or logging.INFO)

    @task_prerun.connect(weak=False)
    def _bind(task_id: str = "", args: Any = None, **_: Any) -> None:
        bind_job(str(args[0]) if args else "", task_id=task_id)

    @task_postrun.connect(weak=False)
    def _unbind(**_: Any) -> None:
        unbind_job()

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        try:
            report = housekeeping.once()
            log.info("worker.ready", reaped=len(report.removed), seen=report.seen)
        except Exception as exc:
            log.warning("worker.first_sweep_failed", error=str(exc))
        housekeeping.start()

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        housekeeping.stop.set()
        if s.pool_size > 0 or s.netns_holders != "off":
            clear_pool(s)
        metrics.disable()

    quiet = ["--quiet"] if s.log_format == "json" else []  # Celery's banner is not JSON
    argv = [*quiet, "worker", "-Q", s.queue, "-c", str(s.concurrency), "-n", f"airlock@{s.hostname}",
            "--loglevel=INFO", "-E", "-O", "fair", "--without-mingle", "--without-gossip",
            *(extra or [])]
    try:
        app.worker_main(argv)
    finally:  # a cold shutdown sends no worker_shutdown: its children's warm containers go here
        if s.pool_size > 0 or s.netns_holders != "off":
            clear_pool(s)
