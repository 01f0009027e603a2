"""The pure parts of the warm pool and the namespace holders: keys, ages, plans, the reaper."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Any

import pytest

from base.limits import Limits
from config.settings import Settings
from tasks.contract import resolve
from tasks.planning import HostFacts, plan_for, pool_plan
from workers import labels as L
from workers.holders import ROLE_HOLDER, HolderPlan, holder_create_kwargs, wants_holder
from workers.labels import OWNER
from workers.pool import (
    PoolKey,
    hand_out_before_s,
    key_for,
    launcher_wait_s,
    needs_update,
    orphans,
)
from workers.reaper import START_GRACE_S, ContainerView, Reason, select
from workers.spec import build_create_kwargs

FLEET = "unit"
MiB = 1024**2


def host(s: Settings) -> HostFacts:
    return HostFacts(seccomp_json=s.seccomp_json, seccomp_sha256="")


def test_a_job_with_the_default_disk_bound_has_the_pools_key() -> None:
    s = Settings()
    _, job = resolve({"code": "print(1)", "limits": {"memory_bytes": 64 * MiB}}, s)
    assert key_for(job) == PoolKey("airlock/sandbox:latest", s.defaults.disk_bytes, "none")
    _, other = resolve({"code": "print(1)", "limits": {"disk_bytes": 64 * MiB}}, s)
    assert key_for(other) != key_for(job)  # the disk bound is fixed at creation: no pool


def test_only_cgroup_limits_need_an_update() -> None:
    base = Limits(timeout_s=30, cpus=2, memory_bytes=4 << 30, pids=256, output_bytes=1, disk_bytes=1)
    assert not needs_update(base, replace(base, timeout_s=1, output_bytes=9))
    for change in ({"cpus": 1.0}, {"memory_bytes": 64 * MiB}, {"pids": 16}):
        assert needs_update(base, replace(base, **change))  # type: ignore[arg-type]


def test_ages_the_reaper_and_the_launcher_agree_on() -> None:
    assert hand_out_before_s(600) == 540 and hand_out_before_s(8) == 6
    assert launcher_wait_s(600) > 600  # only an orphan reaches the launcher's own wait


def test_orphan_pool_volumes_are_this_workers_without_a_container() -> None:
    on_disk = ["airlock-pool-10-11-1-aa", "airlock-pool-10-12-1-bb", "airlock-pool-101-5-1-cc",
               "airlock-0a1b2c3d-1-123", "airlock-pool-20-21-1-dd"]
    assert orphans(on_disk, ["airlock-pool-10-12-1-bb"], 10) == ["airlock-pool-10-11-1-aa"]


def test_a_pooled_plan_is_the_cold_plan_but_for_name_labels_and_wait() -> None:
    s = Settings(pool_max_age_s=120)
    _, job = resolve({"code": "print(1)"}, s)
    cold = build_create_kwargs(plan_for(s, host(s), job, name="airlock-x", uid=2_000_000_009,
                                        now=time.time(), job_id="j", attempt=1))
    key = key_for(job)
    warm = build_create_kwargs(pool_plan(s, host(s), key, name="airlock-pool-x", uid=2_000_000_009,
                                         owner="host:1", now=time.time()))
    assert warm["host_config"]["CgroupParent"] == "/airlock/airlock-pool-x"
    warm["host_config"]["CgroupParent"] = cold["host_config"]["CgroupParent"]
    # Each container has a FIFO folder of its own, named after it; the mounts are the same.
    fifos = [m["Source"] for m in warm["host_config"]["Mounts"][1:]]
    assert {os.path.dirname(f) for f in fifos} == {"/run/airlock/io/airlock-pool-x"}
    warm["host_config"]["Mounts"] = cold["host_config"]["Mounts"]
    assert warm["host_config"] == cold["host_config"]  # caps, seccomp, limits, mounts, network
    assert warm["labels"][L.ROLE] == L.ROLE_POOL and warm["labels"][L.JOB] == ""
    assert warm["labels"][OWNER] == "host:1"
    assert warm["command"][1] == str(launcher_wait_s(120)) and cold["command"][1] == "60"
    assert warm["command"][:1] + warm["command"][2:] == cold["command"][:1] + cold["command"][2:]
    same = ("image", "user", "working_dir", "environment", "stdin_open", "network_disabled",
            "hostname", "tty")
    assert {k: warm[k] for k in same} == {k: cold[k] for k in same}


@pytest.mark.parametrize(("mode", "network", "joins"), [
    ("off", "airlock-workspace", False), ("egress", "none", False),
    ("egress", "airlock-workspace", True), ("all", "none", True),
    ("all", "container:abc", False), ("all", "host", False),
])
def test_which_jobs_join_a_holder(mode: str, network: str, joins: bool) -> None:
    assert wants_holder(mode, network) is joins


def test_a_holder_is_hardened_and_expires_on_its_own() -> None:
    s = Settings()
    holder = f"{s.sandbox.holder_uid}:{s.sandbox.holder_uid}"
    plan = HolderPlan(fleet=FLEET, host="h", owner="h:1", image="img", seccomp_json=s.seccomp_json,
                      user=holder, max_age_s=100)
    kw = holder_create_kwargs(plan, "none", "airlock-holder-1", now=1000.0)
    hc = kw["host_config"]
    assert hc["ReadonlyRootfs"] and hc["CapDrop"] == ["ALL"] and "CapAdd" not in hc
    assert hc["SecurityOpt"][0] == "no-new-privileges:true"
    assert json.loads(hc["SecurityOpt"][1].removeprefix("seccomp=")) == json.loads(s.seccomp_json)
    assert kw["user"] == holder and hc["PidsLimit"] <= 4 and hc["LogConfig"]["Type"] == "none"
    assert kw["network_disabled"] is True and hc["NetworkMode"] == "none"
    sleep_s = int(kw["command"][1])
    assert kw["command"][0] == "sleep" and sleep_s > 100
    assert float(kw["labels"][L.DEADLINE]) == 1000.0 + sleep_s
    assert kw["labels"][L.ROLE] == ROLE_HOLDER and kw["labels"][OWNER] == "h:1"
    ws = holder_create_kwargs(plan, "airlock-workspace", "airlock-holder-2", now=1000.0,
                              dns_options=("timeout:1",))
    assert ws["network_disabled"] is False and ws["host_config"]["NetworkMode"] == "airlock-workspace"
    assert ws["host_config"]["DnsOptions"] == ["timeout:1"]  # the joiners' resolv.conf is the holder's
    assert "DnsOptions" not in hc
    assert "Runtime" not in hc  # the engine's default, unless the plan names the jobs' runtime
    crun = holder_create_kwargs(replace(plan, runtime="crun"), "none", "h-3", now=1000.0)
    assert crun["host_config"]["Runtime"] == "crun"


def view(role: str, *, running: bool = True, created: float = 0.0, deadline: float = 0.0,
         job: str = "", attempt: int = 0) -> ContainerView:
    labels: dict[str, Any] = {L.MANAGED: "true", L.FLEET: FLEET, L.ROLE: role, L.JOB: "",
                              L.CREATED: f"{created}", L.DEADLINE: f"{deadline}"}
    return ContainerView.from_labels(f"{role}-{created}-{running}", labels, running, job, attempt)


def reasons(*views: ContainerView, now: float) -> dict[str, str]:
    return {r.container.id: str(r.reason)
            for r in select(views, {}, fleet=FLEET, now=now, pool_max_age_s=600)}


def test_the_reaper_leaves_live_holders_and_takes_dead_or_expired_ones() -> None:
    now = time.time()
    live = view(ROLE_HOLDER, created=now - 300, deadline=now + 600)
    starting = view(ROLE_HOLDER, running=False, created=now - 1, deadline=now + 900)
    exited = view(ROLE_HOLDER, running=False, created=now - START_GRACE_S - 1, deadline=now + 900)
    expired = view(ROLE_HOLDER, created=now - 1000, deadline=now - 1)
    got = reasons(live, starting, exited, expired, now=now)
    assert got == {exited.id: Reason.EXITED, expired.id: Reason.HOLDER_EXPIRED}


def test_the_reaper_gives_a_pool_container_time_to_start() -> None:
    now = time.time()
    starting = view(L.ROLE_POOL, running=False, created=now - 1)
    exited = view(L.ROLE_POOL, running=False, created=now - START_GRACE_S - 1)
    old = view(L.ROLE_POOL, created=now - 601)
    fresh = view(L.ROLE_POOL, created=now - 10)
    got = reasons(starting, exited, old, fresh, now=now)
    assert got == {exited.id: Reason.EXITED, old.id: Reason.POOL_EXPIRED}
