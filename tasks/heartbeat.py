"""What a worker tells the fleet after each housekeeping pass: its row in the hosts table
(``tasks.hosts``) and the gauges ops watch (queue, Redis memory, disk stores, drained)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import redis
import structlog
from sqlalchemy.engine import Engine

from config.settings import Settings
from tasks import hosts, metrics
from tasks.migrate import head_revision
from workers import engine
from workers import labels as L
from workers.reaper import ContainerView

log = structlog.get_logger(__name__)
DEFAULT_ENGINE = "unix:///var/run/docker.sock"  # docker-py's default, without DOCKER_HOST


def in_use(views: Iterable[ContainerView]) -> tuple[int, int]:
    """Pure: (job containers running, warm ones waiting) of one sweep's listing."""
    running = [v for v in views if v.running]
    return (sum(v.role == L.ROLE_JOB for v in running),
            sum(v.role == L.ROLE_POOL for v in running))


def store_usage(path: str) -> tuple[int, int] | None:
    """(size, free bytes) of the filesystem at ``path``; None when it is not there."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


class Heartbeat:
    """One per worker main process; the engine's facts are asked once."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self._engine: tuple[str, str] | None = None

    def engine_facts(self, api: Any) -> tuple[str, str]:
        if self._engine is None:
            version = engine.call("engine version", api.version)
            self._engine = (engine.engine_id(api), str(version.get("Version") or ""))
        return self._engine

    def beat(self, db: Engine, api: Any, views: Iterable[ContainerView] = (), *,
             starting: bool = False) -> hosts.Beat:
        s = self.s
        engine_id, engine_version = self.engine_facts(api)
        slots, warm = in_use(views)
        b = hosts.Beat(name=s.hostname, fleet=s.fleet, queue=s.queue, engine_id=engine_id,
                       engine_url=s.docker_host or DEFAULT_ENGINE,
                       engine_version=engine_version, version=hosts.code_version(),
                       schema_head=head_revision(), concurrency=s.concurrency,
                       pool_size=s.pool.size * s.concurrency, slots_in_use=slots,
                       pool_warm=warm)
        hosts.beat(db, b, starting=starting)
        metrics.worker_info(s.hostname, b.version, engine_version)
        metrics.host_drained(hosts.is_drained(db, s.hostname))
        metrics.heartbeat(time.time())
        return b

    def gauges(self, r: redis.Redis) -> None:
        """The gauges read from Redis and the host's disk: errors are logged, never raised
        (a metric is no reason for a maintenance pass to fail)."""
        s = self.s
        for store, path in (("volumes", s.sandbox.volumes_root), ("spool", s.sandbox.spool_dir)):
            usage = store_usage(path)
            if usage is not None:
                metrics.disk(store, *usage)
        try:
            metrics.queue_length(int(r.llen(s.queue)))  # type: ignore[arg-type]
            memory: Any = r.info("memory")
            metrics.redis_memory(int(memory.get("used_memory", 0)),
                                 int(memory.get("maxmemory", 0)))
        except redis.exceptions.RedisError as exc:
            log.warning("heartbeat.redis_gauges_failed", error=str(exc))
