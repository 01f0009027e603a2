"""Per-process resources of a worker: made after fork, never at import."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

import docker
import redis
import structlog

from base.errors import AirlockError
from config.seccomp import profile_sha256
from config.settings import Settings
from tasks import admission, planning, streams
from tasks.outputs import Outputs
from tasks.planning import HostFacts
from tasks.queue import JobQueue
from tasks.relay import Relay
from tasks.secrets import SecretBox, SecretStore
from tasks.store import JobStore, make_engine
from workers import engine
from workers import labels as L
from workers.cpusets import CpuSets
from workers.holders import HolderPlan, Holders
from workers.pool import PoolKey, WarmPool, owner_label
from workers.slots import Slots
from workers.spec import LaunchPlan
from workers.storage import TmpfsVolumes, Volumes, volumes_for

log = structlog.get_logger(__name__)

@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    redis: redis.Redis
    _api: docker.APIClient | None = None
    volumes: Volumes = field(default_factory=TmpfsVolumes)
    seccomp_json: str = ""
    seccomp_sha256: str = ""
    agent_seccomp_json: str = ""  # the inner-sandbox profiles' (empty: not derivable here)
    engine_info: dict[str, str] = field(default_factory=dict)
    pool: WarmPool | None = None
    holders: Holders | None = None
    relay: Relay | None = None  # live output: made, and its thread started, on first use
    _runtime: str | None = None
    _slots: Slots | None = None
    _cpusets: CpuSets | None = None
    _queue: JobQueue | None = None
    _outputs: Outputs | None = None

    @property
    def outputs(self) -> Outputs:
        """Where outputs kept whole go (PostgreSQL, or the object store): made on first use."""
        if self._outputs is None:
            self._outputs = Outputs.for_settings(self.store.engine, self.settings)
        return self._outputs
    _secrets: SecretStore | None = None

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
        (tasks/startup.check_host); any other caller asks the engine once, here."""
        if self._runtime is None:
            wanted = self.settings.runtime
            self._runtime = wanted or engine.runtime_for(self.api, wanted)
        return self._runtime

    @property
    def slots(self) -> Slots:
        """The host's table of uids and side resources, as this engine's and fleet's."""
        if self._slots is None:
            self._slots = host_slots(self.settings, engine.engine_id(self.api))
        return self._slots

    @property
    def cpusets(self) -> CpuSets | None:
        """The host's held cores (None with ``AIRLOCK_CPUSET=off``)."""
        if self.settings.sandbox.cpuset == "off":
            return None
        if self._cpusets is None:
            self._cpusets = CpuSets(self.settings.sandbox.cpusets_path,
                                    engine=engine.engine_id(self.api), running=self._running)
        return self._cpusets

    def _running(self) -> set[str]:
        """This engine's running Airlock containers, by name (every fleet's: they share cores)."""
        found = engine.call("list containers",
                            lambda: engine.job_calls(self.api).running(f"{L.MANAGED}=true"))
        return {str((c.get("Labels") or {}).get(L.NAME, "")) for c in found}

    @property
    def secrets(self) -> SecretStore:
        """The tenants' secrets, opened with this host's key (SecretError without one)."""
        if self._secrets is None:
            self._secrets = SecretStore(self.store.engine, SecretBox.from_settings(self.settings))
        return self._secrets

    @property
    def host(self) -> HostFacts:
        return HostFacts(self.seccomp_json, self.seccomp_sha256, self.runtime, self.engine_info,
                         applied_apparmor(self.settings), self.agent_seccomp_json)

    def reset_engine(self) -> None:
        self._api = None

    def admit_next(self) -> None:
        """Fill the fleet's free slots (this process's, just freed, among them): the waiting
        jobs' turn (tasks/admission.py). A failure is left to the next admission."""
        if self._queue is None:
            self._queue = JobQueue(self.settings)
        try:
            admission.admit(self.store.engine, self.settings, self._queue.enqueue)
        except AirlockError as exc:
            log.warning("admission.deferred", error=str(exc))

    def live_relay(self) -> Relay:
        if self.relay is None:
            self.relay = Relay.for_settings(self.redis, self.settings)
        return self.relay

    def in_holder(self, plan: LaunchPlan) -> LaunchPlan:
        """Join this process's namespace holder for the plan's network, where holders apply."""
        if self.holders is None:
            return plan
        mode = self.holders.network_mode(plan.network_mode, plan.dns_options)
        if mode == plan.network_mode:
            return plan
        # Docker refuses a hostname with a container network mode; the holder's is "sandbox",
        # and its resolv.conf (made with these DNS options) is the one the job sees.
        return replace(plan, network_mode=mode, hostname="", dns_options=())


def applied_apparmor(s: Settings) -> str:
    """The AppArmor profile job containers get: the worker's start resolved "auto" into
    "require" (the kernel has it, the profile is loaded) or "off" (tasks/startup.py)."""
    return s.sandbox.apparmor_profile if s.sandbox.apparmor == "require" else ""


def host_slots(s: Settings, engine_id: str) -> Slots:
    first, count = s.sandbox.job_uids
    return Slots(s.sandbox.slots_path, first_uid=first, count=count, engine=engine_id,
                 fleet=s.fleet)


def build_context(settings: Settings) -> WorkerContext:
    s = settings
    return WorkerContext(
        settings=s,
        store=JobStore(make_engine(s.database_url)),
        redis=streams.connect(s.redis_url, s.sentinel_master),
        volumes=volumes_for(s.storage, s.sandbox.volumes_root),
        seccomp_json=s.seccomp_json,
        seccomp_sha256=profile_sha256(s.seccomp_json),
        agent_seccomp_json=planning.agent_seccomp(s),
    )


def start_pool(ctx: WorkerContext) -> None:
    """Give this worker process its namespace holders (made on first use) and its warm pool
    (``pool_size`` > 0), whose refill thread starts now."""
    s = ctx.settings
    owner = owner_label(s.hostname, os.getppid())  # a prefork child's parent: the worker
    if s.holders.mode != "off" and ctx.holders is None:
        ctx.holders = Holders(
            lambda: engine.connect(s.docker_host),
            HolderPlan(fleet=s.fleet, host=s.hostname, owner=owner,
                       image=s.profiles[s.default_profile].image, seccomp_json=ctx.seccomp_json,
                       user=f"{s.sandbox.holder_uid}:{s.sandbox.holder_uid}",
                       max_age_s=s.holders.max_age_s,
                       runtime=ctx.runtime, apparmor=applied_apparmor(s)),
            mode=s.holders.mode, max_jobs=s.holders.max_jobs)
    if s.pool.size <= 0 or ctx.pool is not None:
        return

    def make_plan(key: PoolKey, name: str) -> LaunchPlan:
        now = time.time()
        uid = ctx.slots.take(name, now).uid  # the pool's prepare gives it back on a failure
        plan = planning.pool_plan(s, ctx.host, key, name=name, uid=uid, owner=owner, now=now)
        return ctx.in_holder(plan)

    keys = sorted({PoolKey(s.profiles[p].image, s.defaults.disk_bytes) for p in s.pool.profiles},
                  key=lambda k: k.image)
    ctx.pool = WarmPool(
        connect=lambda: engine.connect(s.docker_host), caller_api=lambda: ctx.api,
        volumes=ctx.volumes, make_plan=make_plan, slots=lambda: ctx.slots,
        keys=keys, size=s.pool.size, max_age_s=s.pool.max_age_s, owner_pid=os.getppid(),
        cpusets=lambda: ctx.cpusets,
    ).start()
