"""Network-namespace holders: long-lived, empty containers whose namespace job containers join
(``network_mode="container:<holder>"``) instead of having Docker set up a network of their own.

Measured on this engine (docs/benchmark.md): a job on a Docker network (the workspace network,
for egress) costs about 370 ms and as much host CPU to start, most of it the veth pair, the
bridge port and the iptables work of a new endpoint; joining a holder already attached costs
about 165 ms. A job with *no* network is already cheap: Airlock creates it with NetworkDisabled,
so runc makes a fresh empty namespace without Docker's network set-up hook, and a holder saves
nothing while sharing a namespace between consecutive jobs. Hence ``netns_holders="egress"``
(the default) puts holders only under jobs that have a network; ``"all"`` also under the rest.

One holder per network per worker process: a process runs one job at a time, so two jobs never
share a namespace at the same time. A holder is recycled after ``max_jobs`` jobs, after
``max_age_s``, and after any job that did not end cleanly. Its only process is ``sleep`` for a
little longer than ``max_age_s``, so an orphan (its worker killed) exits on its own; the reaper
removes holders that exited or passed their deadline label, never a live one.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import structlog

from workers import labels as L
from workers import runner
from workers.engine import call
from workers.spec import CPU_PERIOD_US, hardened

log = structlog.get_logger(__name__)

ROLE_HOLDER = L.ROLE_HOLDER
SLEEP_MARGIN_S = 60.0
CHECK_EVERY_S = 5.0  # a holder in use is checked alive (one inspect) at most this often
MODES = ("off", "egress", "all")


@dataclass(frozen=True, slots=True)
class HolderPlan:
    """How this worker's holders are made: as hardened as a job container, and smaller."""

    fleet: str
    host: str
    owner: str
    image: str
    seccomp_json: str
    user: str  # the first uid of the jobs' range (config/sections.py Sandbox.holder_uid)
    hostname: str = "sandbox"  # containers joining a namespace take its holder's hostname
    max_age_s: float = 900.0
    runtime: str = ""  # the job containers' OCI runtime; empty: the engine's default
    apparmor: str = ""  # the job containers' AppArmor profile; empty: none named


def wants_holder(mode: str, network_mode: str) -> bool:
    """Whether a job planned with ``network_mode`` joins a holder under this ``mode``."""
    if mode == "off" or network_mode.startswith(("container:", "host")):
        return False
    return mode == "all" or network_mode != "none"


def holder_create_kwargs(plan: HolderPlan, network: str, name: str, now: float,
                         dns_options: tuple[str, ...] = ()) -> dict[str, Any]:
    """A holder: ``sleep`` as its only process, nothing writable, no capabilities, the job's
    seccomp profile and user; attached to ``network`` (or a fresh empty namespace for none).
    Its resolv.conf is its joiners': the jobs' DNS options go on the holder."""
    sleep_s = int(plan.max_age_s + SLEEP_MARGIN_S)
    kwargs: dict[str, Any] = {
        "image": plan.image,
        "command": ["sleep", str(sleep_s)],
        "name": name,
        "hostname": plan.hostname,
        "user": plan.user,
        "labels": {
            L.MANAGED: "true", L.FLEET: plan.fleet, L.ROLE: ROLE_HOLDER, L.HOST: plan.host,
            L.NAME: name, L.OWNER: plan.owner, L.CREATED: f"{now:.3f}",
            L.DEADLINE: f"{now + sleep_s:.3f}", L.JOB: "", L.ATTEMPT: "0",
        },
        "network_disabled": network == "none",
        "use_config_proxy": False,
        "host_config": hardened(plan.seccomp_json, plan.runtime, apparmor=plan.apparmor) | {
            "NetworkMode": network,
            "Memory": 16 * 1024**2,
            "MemorySwap": 16 * 1024**2,
            "PidsLimit": 4,
            "CpuPeriod": CPU_PERIOD_US,
            "CpuQuota": CPU_PERIOD_US // 10,
        },
    }
    if dns_options:
        kwargs["host_config"]["DnsOptions"] = list(dns_options)
    return kwargs


@dataclass
class Holder:
    container_id: str
    network: tuple[str, tuple[str, ...]]  # (network, DNS options)
    born: float = field(default_factory=time.monotonic)
    checked: float = field(default_factory=time.monotonic)
    jobs: int = 0

    @property
    def network_mode(self) -> str:
        return f"container:{self.container_id}"


class Holders:
    """This worker process's holders, one per network. Thread-safe: the pool's refill thread
    and the job's thread both plan containers into them."""

    def __init__(self, connect: Callable[[], docker.APIClient], plan: HolderPlan, *,
                 mode: str = "egress", max_jobs: int = 200) -> None:
        if mode not in MODES:
            raise ValueError(f"netns_holders must be one of {MODES}, not {mode!r}")
        self._connect, self.plan, self.mode, self.max_jobs = connect, plan, mode, max_jobs
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()
        self._current: dict[tuple[str, tuple[str, ...]], Holder] = {}
        self._by_id: dict[str, Holder] = {}
        self.made = 0

    def network_mode(self, planned: str, dns_options: tuple[str, ...] = ()) -> str:
        """The network mode to create a container with: its holder's, or ``planned`` as is."""
        if not wants_holder(self.mode, planned):
            return planned
        key = (planned, tuple(dns_options))
        with self._lock:
            holder = self._current.get(key)
            if holder is not None and (self._worn(holder) or not self._alive(holder)):
                self._retire(holder)
                holder = None
            if holder is None:
                holder = self._make(key)
            holder.jobs += 1  # counted when planned: a pooled container's job comes later
            return holder.network_mode

    def done(self, network_mode: str, *, clean: bool) -> None:
        """A job that ran in ``network_mode`` ended; a job that did not end cleanly (its
        container may not have stopped) retires its holder at once."""
        if not network_mode.startswith("container:"):
            return
        with self._lock:
            holder = self._by_id.get(network_mode.removeprefix("container:"))
            if holder is not None and not clean:
                self._retire(holder)

    def _alive(self, holder: Holder) -> bool:
        """Whether the holder still runs (an engine restart or a reaper stops it); checked with
        one inspect at most every CHECK_EVERY_S, so a dead one costs a few failed starts at most."""
        now = time.monotonic()
        if now - holder.checked < CHECK_EVERY_S or self._api is None:
            return True
        api = self._api
        try:
            state = call("inspect holder", lambda: api.inspect_container(holder.container_id))
        except docker.errors.NotFound:
            return False
        except Exception:
            self._api = None  # reconnect on the next make
            return False
        holder.checked = now
        return bool(state["State"]["Running"])

    def _worn(self, holder: Holder) -> bool:
        return (holder.jobs >= self.max_jobs
                or time.monotonic() - holder.born >= self.plan.max_age_s)

    def _make(self, key: tuple[str, tuple[str, ...]]) -> Holder:
        if self._api is None:
            self._api = self._connect()
        api = self._api
        name = f"airlock-holder-{os.getpid()}-{secrets.token_hex(4)}"
        kwargs = holder_create_kwargs(self.plan, key[0], name, time.time(), key[1])
        cid = str(call("create holder", lambda: api.create_container(**kwargs))["Id"])
        try:
            call("start holder", lambda: api.start(cid))
        except BaseException:
            runner.remove_container(api, cid)
            raise
        holder = Holder(cid, key)
        self._current[key] = holder
        self._by_id[cid] = holder
        self.made += 1
        log.info("holder.made", container=cid[:12], network=key[0])
        return holder

    def _retire(self, holder: Holder) -> None:
        """Remove a holder. Containers still in its namespace keep it alive until they end."""
        if self._current.get(holder.network) is holder:
            del self._current[holder.network]
        self._by_id.pop(holder.container_id, None)
        if self._api is not None:
            runner.remove_container(self._api, holder.container_id)

    def close(self) -> None:
        with self._lock:
            for holder in list(self._by_id.values()):
                self._retire(holder)


def remove_owned(api: docker.APIClient, *, fleet: str, owner: str) -> int:
    """At a worker's shutdown: remove the holders its processes made."""
    found = api.containers(all=True, filters={"label": [
        f"{L.MANAGED}=true", f"{L.FLEET}={fleet}", f"{L.ROLE}={ROLE_HOLDER}", f"{L.OWNER}={owner}"]})
    return sum(1 for c in found if runner.remove_container(api, c["Id"]))
