"""The warm pool through the public path: a worker of its own with a pool, one process, a short
max age. Pooled jobs must be indistinguishable from cold ones from inside."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from config.settings import Settings
from tests.services import ROOT, WorkerProcess, airlock_containers
from workers import labels as L

pytestmark = [pytest.mark.integration]
MiB = 1024**2
MAX_AGE_S = 8.0  # the pool recycles at 6 s, the reaper takes strays at 8 s

PROBE = r"""
import json, os, re
def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return f"error {exc.errno}"
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
keep = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
        "Seccomp", "Seccomp_filters")
PATHS = r"(subvolid|subvol|lowerdir|upperdir|workdir)=[^,]+"  # differ between any two containers
mounts = sorted(" ".join((m.split()[1], m.split()[2], re.sub(PATHS, "", m.split()[3])))
                for m in open("/proc/self/mounts").read().splitlines())
cg = {name: read("/sys/fs/cgroup/" + name) for name in (
    "memory/memory.limit_in_bytes", "memory/memory.memsw.limit_in_bytes",
    "memory/memory.swappiness", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us", "pids/pids.max")}
print(json.dumps({
    "status": {k: status[k].strip() for k in keep}, "mounts": mounts, "cgroup": cg,
    "ids": [os.getuid(), os.getgid(), os.getgroups()], "host": os.uname().nodename,
    "net": sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]),
    "limits": read("/proc/self/limits"), "cwd": os.getcwd(),
    "workspace": sorted(os.listdir("/workspace")), "home": sorted(os.listdir(os.environ["HOME"])),
    "env": sorted(os.environ), "umask": os.umask(0o22),
}))
open("/workspace/left-behind", "w").write("x")
open(os.environ["HOME"] + "/.left-behind", "w").write("x")
"""


@pytest.fixture(scope="module")
def pool_settings(settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return settings.but(**{
        "fleet": f"{settings.fleet}-pool{tag}", "queue": f"{settings.queue}-pool{tag}",
        "concurrency": 1, "pool_size": 1, "pool_max_age_s": MAX_AGE_S, "reaper_interval_s": 2.0})


@pytest.fixture(scope="module")
def pool_worker(pool_settings: Settings, artifacts: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(pool_settings, artifacts / f"worker-{pool_settings.fleet}.log",
                         AIRLOCK_POOL_MAX_AGE_S=str(MAX_AGE_S),
                         AIRLOCK_REAPER_INTERVAL_S="2.0").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pool_client(pool_settings: Settings, pool_worker: WorkerProcess) -> Iterator[Airlock]:
    c = Airlock(pool_settings)
    yield c
    c.close()


def waiting(fleet: str) -> list[dict[str, Any]]:
    """Pool containers that are running and not given to a job (the attempts table knows)."""
    return [c for c in airlock_containers(fleet)
            if (c.get("Labels") or {}).get(L.ROLE) == L.ROLE_POOL  # type: ignore[union-attr]
            and c.get("State") == "running"]


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(client: Airlock, code: str, **limits: Any) -> JobRecord:
    """The job's record, once its container is gone too (it is removed just after the result
    is written): a used pooled container is never counted as a waiting one."""
    spec: dict[str, Any] = {"code": code}
    if limits:
        spec["limits"] = limits
    record = client.submit(spec).wait(60)
    wait_for(lambda: record.container_id not in
             {c["Id"] for c in airlock_containers(client.settings.fleet)}, 10,
             "the used container's removal")
    return record


def probe(client: Airlock, **limits: Any) -> tuple[JobRecord, dict[str, Any]]:
    wait_for(lambda: waiting(client.settings.fleet), 15, "a warm container")
    record = run(client, PROBE, **limits)
    assert record.verdict == "ok", record.summary() + record.stderr
    return record, json.loads(record.stdout)


def test_a_pooled_job_runs_and_its_container_goes(pool_client: Airlock) -> None:
    wait_for(lambda: waiting(pool_client.settings.fleet), 15, "a warm container")
    record = run(pool_client, "print(6*7)")  # and its container gone
    assert (record.verdict, record.stdout) == ("ok", "42\n"), record.summary()
    assert record.phases is not None and record.phases["pooled"] is True


def test_pooled_and_cold_jobs_look_the_same_from_inside(pool_client: Airlock) -> None:
    s = pool_client.settings
    warm, inside_warm = probe(pool_client)
    # Another disk bound has no pool: the same worker runs this one cold, through _acquire.
    cold, inside_cold = probe(pool_client, disk_bytes=s.defaults.disk_bytes - MiB)
    assert warm.phases and warm.phases["pooled"] is True
    assert cold.phases and cold.phases["pooled"] is False
    # the pool's point: no create and start on the job's path
    assert warm.phases["container_ready_ms"] < cold.phases["container_ready_ms"]
    for key in ("mounts", "cgroup", "host", "net", "limits", "cwd", "workspace", "home", "env",
                "umask"):
        assert inside_warm[key] == inside_cold[key], key
    own = ("Uid", "Gid", "Groups")  # each container its own (workers/slots.py)
    assert ({k: v for k, v in inside_warm["status"].items() if k not in own}
            == {k: v for k, v in inside_cold["status"].items() if k not in own})
    first, count = s.sandbox.job_uids
    for ids in (inside_warm["ids"], inside_cold["ids"]):
        assert ids[0] == ids[1] and ids[2] == [ids[1]] and first <= ids[0] < first + count
    assert inside_warm["workspace"] == ["main.py"] and inside_warm["home"] == []  # fresh
    assert inside_warm["status"]["NoNewPrivs"] == "1" and inside_warm["status"]["Seccomp"] == "2"
    assert inside_warm["status"]["CapEff"] == "0000000000000000"
    assert inside_warm["net"] == ["lo"]


def test_a_pooled_job_gets_the_limits_it_asked_for(pool_client: Airlock) -> None:
    s = pool_client.settings
    asked = {"memory_bytes": 96 * MiB, "pids": 24, "cpus": 0.5}
    warm, inside_warm = probe(pool_client, **asked)
    cold, inside_cold = probe(pool_client, **asked, disk_bytes=s.defaults.disk_bytes - MiB)
    assert warm.phases and warm.phases["pooled"] is True
    assert cold.phases and cold.phases["pooled"] is False
    assert inside_warm["cgroup"] == inside_cold["cgroup"]
    cg = inside_warm["cgroup"]
    assert cg["memory/memory.limit_in_bytes"] == str(96 * MiB)
    assert cg["memory/memory.memsw.limit_in_bytes"] == str(96 * MiB)
    assert (cg["pids/pids.max"], cg["cpu/cpu.cfs_quota_us"]) == ("24", "50000")
    # and the next pooled job is back at the defaults: limits never leak to the next job
    _, after = probe(pool_client)
    assert after["cgroup"]["pids/pids.max"] == str(s.defaults.pids)


def test_the_pool_refills_and_recycles_old_containers(pool_client: Airlock) -> None:
    fleet = pool_client.settings.fleet
    first = {c["Id"] for c in wait_for(lambda: waiting(fleet), 15, "a warm container")}
    record = run(pool_client, "print('used')")
    assert record.phases and record.phases["pooled"] is True
    assert record.container_id in first
    refilled = wait_for(lambda: {c["Id"] for c in waiting(fleet)} - first, 10, "a refill")
    assert len(refilled) == 1  # pool_size: one per process, one process
    # Unused past its age, a warm container is replaced; the launcher never ran a job in it.
    wait_for(lambda: not ({c["Id"] for c in airlock_containers(fleet)} & refilled),
             MAX_AGE_S + 5, "recycling of the idle container")
    assert wait_for(lambda: waiting(fleet), 10, "a new warm container")


def test_no_pool_container_is_left_after_the_worker_stops(
        pool_client: Airlock, pool_worker: WorkerProcess) -> None:
    fleet = pool_client.settings.fleet
    wait_for(lambda: waiting(fleet), 15, "a warm container")
    pool_worker.stop()
    wait_for(lambda: not airlock_containers(fleet), 10, "no container of the worker's fleet")


def test_the_benchmark_runs(tmp_path: Path) -> None:
    """bench/run.py end to end at its smallest, so it cannot rot."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--runs", "3", "--levels", "1", "--throughput-jobs", "3",
         "--stream-mib", "2", "--stream-runs", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["latency"]["samples"]["airlock_ms"]) == 3
    assert result["latency"]["bare_median_ms"] > 0 and result["throughput"][0]["airlock_per_s"] > 0
    assert result["stream"]["airlock_mib_per_s"] > 0
    assert result["phases_median_ms"]["pooled_share"] > 0
    assert "| trivial job, median (ms)" in done.stdout
