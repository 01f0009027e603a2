"""The warm pool: sandboxes prepared ahead of their job, each handed out once, then destroyed.

A pooled container is made by the same ``runner.prepare`` as a cold one, from a plan that
differs only in its name, its labels (role=pool, no job: labels cannot change after creation,
so the reaper finds a pooled container's job through the attempts table) and the launcher's
own wait for a payload (long enough to sit in the pool; an orphan still exits on its own).
Its job arrives through the attach stdin like any other: nothing is ever exec'd into it.

One pool per worker process (a Celery prefork child), refilled by one background thread of that
process, per key (image, disk bound, network). Memory, CPU and pids limits are changed on a
started container (``runner.apply_limits``); the disk bound and the network are fixed at creation,
so they are part of the key. A job whose key has no pool runs cold.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

import docker
import structlog

from base.errors import AirlockError
from base.limits import Limits
from workers import dirs, pipes, runner
from workers import labels as L
from workers.cpusets import CpuSets
from workers.runner import Sandbox
from workers.slots import Slots
from workers.spec import LaunchPlan
from workers.storage import Volumes

log = structlog.get_logger(__name__)

WAIT_FOR_BUILD_S = 1.0  # a job finding its pool empty waits this long for a build under way
LAUNCHER_WAIT_MARGIN_S = 30.0
MIN_AVAILABLE_BYTES = 512 * 1024**2  # no refill while the host has less memory available
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """What must match between a pooled container and its job (the rest can be updated)."""

    image: str
    disk_bytes: int
    network: str = "none"


class JobShape(Protocol):
    @property
    def image(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def network(self) -> str: ...


def key_for(job: JobShape) -> PoolKey:
    return PoolKey(job.image, job.limits.disk_bytes, job.network)


def needs_update(have: Limits, want: Limits) -> bool:
    """Whether a started container's cgroup limits must change for this job."""
    return (have.memory_bytes, have.cpus, have.pids) != (want.memory_bytes, want.cpus, want.pids)


def hand_out_before_s(max_age_s: float) -> float:
    """Age after which a pooled container is recycled rather than handed out: well before the
    reaper's ``pool_max_age_s``, so the reaper never takes one that a job was just given."""
    return max_age_s - min(60.0, max_age_s / 4)


def launcher_wait_s(max_age_s: float) -> int:
    """The launcher's own wait for a payload: past the max age, so only an orphan reaches it."""
    return int(max_age_s + LAUNCHER_WAIT_MARGIN_S)


def available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def waiting(sandbox: Sandbox) -> bool:
    """A waiting launcher writes nothing: anything readable (output or EOF) means it is gone."""
    return not pipes.launcher_gone(sandbox.pipes)


@dataclass
class PoolStats:
    built: int = 0
    taken: int = 0
    missed: int = 0
    recycled: int = 0
    failed: int = 0
    limits_updated: int = 0


@dataclass
class _Slot:
    ready: deque[Sandbox] = field(default_factory=deque)
    building: int = 0


Connect = Callable[[], docker.APIClient]
MakePlan = Callable[[PoolKey, str], LaunchPlan]


class WarmPool:
    """Keeps ``size`` started sandboxes per key; ``take`` hands one out, at most once."""

    def __init__(self, *, connect: Connect, caller_api: Connect,
                 volumes: Volumes, make_plan: MakePlan, slots: Callable[[], Slots] | None = None,
                 keys: Iterable[PoolKey], size: int, max_age_s: float, owner_pid: int = 0,
                 min_available_bytes: int = MIN_AVAILABLE_BYTES,
                 cpusets: Callable[[], CpuSets | None] = lambda: None) -> None:
        self._connect, self._caller_api, self.cpusets = connect, caller_api, cpusets
        self.volumes, self.make_plan, self.slots = volumes, make_plan, slots
        self.size, self.max_age_s = size, max_age_s
        self.min_available_bytes = min_available_bytes
        self._slots = {key: _Slot() for key in keys}
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._doomed: list[Sandbox] = []
        self._api: docker.APIClient | None = None
        self._names = itertools.count(1)
        self.name_prefix = f"{name_prefix(owner_pid)}{os.getpid()}-"
        self._thread: threading.Thread | None = None
        self.stats = PoolStats()

    @property
    def keys(self) -> list[PoolKey]:
        return list(self._slots)

    def start(self) -> WarmPool:
        if self._thread is None and self.size > 0 and self._slots:
            self._thread = threading.Thread(target=self._loop, name="airlock-pool", daemon=True)
            self._thread.start()
        return self

    def ready_count(self, key: PoolKey | None = None) -> int:
        with self._cond:
            slots = [self._slots[key]] if key is not None else list(self._slots.values())
            return sum(len(s.ready) for s in slots)

    # --- the job's side -------------------------------------------------------------------

    def take(self, job: JobShape, job_id: str = "", attempt: int = 0) -> Sandbox | None:
        """A started sandbox with the job's limits, or None (the job then runs cold)."""
        key = key_for(job)
        slot = self._slots.get(key)
        if slot is None or self._stop.is_set():
            return None
        sandbox = self._pop(slot)
        self._wake.set()
        if sandbox is None:
            self.stats.missed += 1
            log.info("pool.miss", job_id=job_id, image=key.image)
            return None
        sandbox.api = self._caller_api()  # the refill thread keeps its own client
        try:
            cpuset = self._cores(sandbox, job.limits)
            if self._update(sandbox, job.limits, cpuset):
                self.stats.limits_updated += 1
        except AirlockError as exc:
            log.warning("pool.update_failed", job_id=job_id, error=str(exc))
            self._discard(sandbox)  # its destroy gives the cores back
            return None
        sandbox.plan = replace(sandbox.plan, limits=job.limits, cpuset_cpus=cpuset)
        self.stats.taken += 1
        return sandbox

    def _cores(self, sandbox: Sandbox, limits: Limits) -> str:
        """The job's cores, taken for the sandbox now (it waited on every core); empty: off."""
        sandbox.cpusets = self.cpusets()
        if sandbox.cpusets is None:
            return ""
        return sandbox.cpusets.take(sandbox.plan.name, limits.cpus, time.time())

    def _update(self, sandbox: Sandbox, limits: Limits, cpuset: str) -> bool:
        """Give the sandbox the job's limits and cores, where they differ from what it has (it
        waited on every core: a set of every core needs no update); whether it was updated."""
        cores = "" if sandbox.cpusets is None or cpuset == sandbox.cpusets.everything else cpuset
        if not (needs_update(sandbox.plan.limits, limits) or cores):
            return False
        runner.apply_limits(sandbox, limits, cores)
        return True

    def _pop(self, slot: _Slot) -> Sandbox | None:
        deadline = time.monotonic() + WAIT_FOR_BUILD_S
        with self._cond:
            while True:
                while slot.ready:
                    sandbox = slot.ready.popleft()  # the oldest first: none ages out unused
                    if self._fresh(sandbox) and waiting(sandbox):
                        return sandbox
                    self._doomed.append(sandbox)
                left = deadline - time.monotonic()
                if slot.building == 0 or left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(left)

    def _fresh(self, sandbox: Sandbox) -> bool:
        return time.monotonic() - sandbox.prepared_at < hand_out_before_s(self.max_age_s)

    def discard_joined(self, network_mode: str) -> int:
        """Give up the waiting sandboxes created in this (namespace holder's) network mode."""
        with self._cond:
            gone = 0
            for slot in self._slots.values():
                keep = deque(s for s in slot.ready if s.plan.network_mode != network_mode)
                gone += len(slot.ready) - len(keep)
                self._doomed.extend(s for s in slot.ready if s.plan.network_mode == network_mode)
                slot.ready = keep
        self._wake.set()
        return gone

    def _discard(self, sandbox: Sandbox) -> None:
        with self._cond:
            self._doomed.append(sandbox)
        self._wake.set()

    # --- the refill thread ----------------------------------------------------------------

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._destroy_doomed()
                self._recycle()
                key = self._deficit()
                if key is not None and self._room():
                    self._build(key)
                    failures = 0
                    continue
            except Exception as exc:
                self.stats.failed += 1
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.warning("pool.refill_failed", error=str(exc), retry_in_s=delay)
                self._api = None  # reconnect: the engine may have restarted
                self._stop.wait(delay)
                continue
            self._wake.wait(1.0)
            self._wake.clear()

    def _deficit(self) -> PoolKey | None:
        with self._cond:
            for key, slot in self._slots.items():
                if len(slot.ready) + slot.building < self.size:
                    return key
        return None

    def _room(self) -> bool:
        free = available_bytes()
        if free is not None and free < self.min_available_bytes:
            log.warning("pool.host_memory_low", available=free)
            self._stop.wait(5.0)
            return False
        return True

    def _build(self, key: PoolKey) -> None:
        slot = self._slots[key]
        name = f"{self.name_prefix}{next(self._names)}-{secrets.token_hex(3)}"
        with self._cond:
            slot.building += 1
        sandbox = None
        try:
            if self._api is None:
                self._api = self._connect()
            plan = self.make_plan(key, name)
            sandbox = runner.prepare(self._api, plan, self.volumes,
                                     self.slots() if self.slots is not None else None)
        finally:
            with self._cond:
                slot.building -= 1
                if sandbox is not None:
                    if self._stop.is_set():
                        self._doomed.append(sandbox)
                    else:
                        slot.ready.append(sandbox)
                        self.stats.built += 1
                self._cond.notify_all()

    def _recycle(self) -> None:
        with self._cond:
            for slot in self._slots.values():
                keep: deque[Sandbox] = deque()
                for sandbox in slot.ready:
                    if self._fresh(sandbox) and waiting(sandbox):
                        keep.append(sandbox)
                    else:
                        self._doomed.append(sandbox)
                        self.stats.recycled += 1
                slot.ready = keep

    def _destroy_doomed(self) -> None:
        with self._cond:
            doomed, self._doomed = self._doomed, []
        for sandbox in doomed:
            if self._api is not None:
                sandbox.api = self._api  # one client per thread
            runner.destroy(sandbox, self.volumes)

    # --- shutdown -------------------------------------------------------------------------

    def drain(self, timeout: float = 15.0) -> int:
        """Stop refilling and destroy every sandbox not handed out; how many were destroyed."""
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            left = [s for slot in self._slots.values() for s in slot.ready] + self._doomed
            for slot in self._slots.values():
                slot.ready.clear()
            self._doomed = []
        for sandbox in left:
            runner.destroy(sandbox, self.volumes)
        return len(left)


def owner_label(host: str, main_pid: int) -> str:
    return f"{host}:{main_pid}"


def name_prefix(main_pid: int) -> str:
    """Pooled containers (and their volumes and cgroup parents) are named after the worker."""
    return f"airlock-pool-{main_pid}-"


def orphans(on_disk: Iterable[str], named: Iterable[str], main_pid: int) -> list[str]:
    """This worker's pool volumes and pipe folders that no container names: a process ended
    between making them and its container (a SIGTERM to the process group, a SIGKILL)."""
    taken, prefix = set(named), name_prefix(main_pid)
    return sorted(n for n in on_disk if n.startswith(prefix) and n not in taken)


def remove_idle(api: docker.APIClient, *, fleet: str, owner: str, beside: runner.Beside,
                busy: Callable[[list[str]], Iterable[str]]) -> int:
    """At a worker's shutdown: remove the pooled containers its processes left (a SIGTERM ends
    a prefork child without its own clean-up). ``busy`` names those a job was given; they are
    the reaper's, as any job container."""
    found = api.containers(all=True, filters={"label": [
        f"{L.MANAGED}=true", f"{L.FLEET}={fleet}", f"{L.ROLE}={L.ROLE_POOL}", f"{L.OWNER}={owner}"]})
    ids = [c["Id"] for c in found]
    taken = set(busy(ids)) if ids else set()
    removed = 0
    names = []
    for c in found:
        if c["Id"] in taken or not runner.remove_container(api, c["Id"]):
            continue
        removed += 1
        names.append((c.get("Labels") or {}).get(L.NAME, ""))
    main_pid = int(owner.rsplit(":", 1)[-1])
    on_disk = [*dirs.found(beside.io_dir), *beside.volumes.found()]
    if on_disk:
        left = {(c.get("Labels") or {}).get(L.NAME, "") for c in api.containers(all=True)}
        names += orphans(on_disk, left, main_pid)
    for name in sorted(set(filter(None, names))):
        beside.remove(name)
    return removed
