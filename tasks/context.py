"""Per-process resources of a worker: made after fork, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import docker
import redis

from config.seccomp import profile_sha256
from config.settings import Settings
from tasks import streams
from tasks.relay import Relay
from tasks.store import JobStore, make_engine
from workers import engine
from workers.holders import HolderPlan, Holders
from workers.pool import PoolKey, WarmPool, owner_label
from workers.storage import BtrfsVolumes, TmpfsVolumes, volumes_for


@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    redis: redis.Redis
    _api: docker.APIClient | None = None
    volumes: BtrfsVolumes | TmpfsVolumes = field(default_factory=TmpfsVolumes)
    seccomp_json: str = ""
    seccomp_sha256: str = ""
    engine_info: dict[str, Any] = field(default_factory=dict)
    pool: WarmPool | None = None
    holders: Holders | None = None
    relay: Relay | None = None  # live output: made, and its thread started, on first use
    _runtime: str | None = None

    @property
    def api(self) -> docker.APIClient:
        """The engine client, (re)connected on first use: a dead engine is a retryable error."""
        if self._api is None:
            self._api = engine.connect(self.settings.docker_host)
            version = self._api.version()
            self.engine_info = {"docker": version.get("Version"),
                                "api": version.get("ApiVersion")}
        return self._api

    @property
    def runtime(self) -> str:
        """The job containers' OCI runtime, by name. A worker resolved it at its start
        (tasks/worker.check_host); any other caller asks the engine once, here."""
        if self._runtime is None:
            wanted = self.settings.runtime
            self._runtime = wanted or engine.runtime_for(self.api, wanted)
        return self._runtime

    def reset_engine(self) -> None:
        self._api = None


def build_context(settings: Settings) -> WorkerContext:
    s = settings
    return WorkerContext(
        settings=s,
        store=JobStore(make_engine(s.database_url)),
        redis=streams.connect(s.redis_url),
        volumes=volumes_for(s.storage, s.volumes_root, s.job_uid, s.job_gid),
        seccomp_json=s.seccomp_json,
        seccomp_sha256=profile_sha256(s.seccomp_json),
    )


def start_pool(ctx: WorkerContext) -> None:
    """Give this worker process its namespace holders (made on first use) and its warm pool
    (``pool_size`` > 0), whose refill thread starts now."""
    s = ctx.settings
    owner = owner_label(s.hostname, os.getppid())  # a prefork child's parent: the worker
    if s.netns_holders != "off" and ctx.holders is None:
        ctx.holders = Holders(
            lambda: engine.connect(s.docker_host),
            HolderPlan(fleet=s.fleet, host=s.hostname, owner=owner,
                       image=s.profiles[s.default_profile].image, seccomp_json=ctx.seccomp_json,
                       user=f"{s.job_uid}:{s.job_gid}", max_age_s=s.holder_max_age_s,
                       runtime=ctx.runtime),
            mode=s.netns_holders, max_jobs=s.holder_max_jobs)
    if s.pool_size <= 0 or ctx.pool is not None:
        return
    from tasks.execute import pool_plan  # execute imports this module

    keys = sorted({PoolKey(s.profiles[p].image, s.defaults.disk_bytes) for p in s.pool_profiles},
                  key=lambda k: k.image)
    ctx.pool = WarmPool(
        connect=lambda: engine.connect(s.docker_host), caller_api=lambda: ctx.api,
        volumes=ctx.volumes, make_plan=lambda key, name: pool_plan(ctx, key, name, owner),
        keys=keys, size=s.pool_size, max_age_s=s.pool_max_age_s, owner_pid=os.getppid(),
    ).start()
