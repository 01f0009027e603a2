"""Dynamic cpusets on the real engine (workers/cpusets.py): jobs of one CPU get disjoint cores,
the engine shows them, they go back after the job, a SIGKILLed worker's are reclaimed once its
container stops, and a pooled container gets its set by a live update."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from config.settings import Settings
from tasks.models import Job
from tests.services import WorkerProcess, airlock_containers
from workers import engine
from workers import labels as L
from workers.cpusets import CpuSets, online_cores, parse

pytestmark = [pytest.mark.integration]

AFFINITY = ("import json, os, time\nprint(json.dumps(sorted(os.sched_getaffinity(0))), flush=True)\n"
            "time.sleep({sleep})")


def needs_two_cores() -> None:
    if len(online_cores()) < 2:
        pytest.fail("this test needs a host with two cores or more")


@pytest.fixture(scope="module")
def api() -> Iterator[docker.APIClient]:
    client = engine.connect(None)
    yield client
    client.close()


def cpusets(s: Settings, api: docker.APIClient, grace_s: float = 10.0) -> CpuSets:
    """The host's table as a worker of this engine sees it."""
    def running() -> set[str]:
        found = api.containers(filters={"label": [f"{L.MANAGED}=true"]})
        return {(c.get("Labels") or {}).get(L.NAME, "") for c in found}

    return CpuSets(s.sandbox.cpusets_path, engine=engine.engine_id(api), running=running,
                   grace_s=grace_s)


def fleet_worker(settings: Settings, artifacts: Path, name: str,
                 **changes: Any) -> tuple[Settings, WorkerProcess]:
    tag = uuid.uuid4().hex[:6]
    s = settings.but(fleet=f"{settings.fleet}-{name}{tag}", queue=f"{settings.queue}-{name}{tag}",
                     **changes)
    return s, WorkerProcess(s, artifacts / f"worker-{s.fleet}.log").start()


def submit(client: Airlock, sleep: float, **limits: Any) -> Any:
    return client.submit({"code": AFFINITY.format(sleep=sleep),
                          "limits": {"cpus": 1, **limits}})


def running_jobs(s: Settings, want: int, api: docker.APIClient,
                 timeout: float = 30.0) -> list[dict[str, Any]]:
    """The inspected containers of the fleet running a job (cold ones by their label, pooled
    ones by their set: a waiting one has none), once ``want`` of them run."""
    deadline = time.monotonic() + timeout
    while True:
        held = cpusets(s, api).held()
        found = [api.inspect_container(c["Id"]) for c in airlock_containers(s.fleet)
                 if c.get("State") == "running"
                 and ((c.get("Labels") or {}).get(L.JOB)  # type: ignore[union-attr]
                      or (c.get("Labels") or {}).get(L.NAME) in held)]  # type: ignore[union-attr]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def wait_given_back(s: Settings, api: docker.APIClient, names: set[str] | None = None) -> None:
    """Wait (10 s at most) until the table holds none of ``names`` (None: no set at all): a
    job's container, and so its cores, go just after its result."""
    deadline = time.monotonic() + 10
    while (held := set(cpusets(s, api).held())) and (names is None or names & held):
        assert time.monotonic() < deadline, f"the cores were not given back: {sorted(held)}"
        time.sleep(0.05)


def test_two_one_cpu_jobs_get_disjoint_cores_that_go_back_after(
        settings: Settings, artifacts: Path, api: docker.APIClient) -> None:
    """Given a cold worker of two processes, when two --cpus 1 jobs run at once, then each
    container is created with a core of its own, the job runs on it alone, its result's
    provenance names it, and the table holds neither once both are done."""
    needs_two_cores()
    s, worker = fleet_worker(settings, artifacts, "cpuset", concurrency=2, pool_size=0)
    client = Airlock(s)
    try:
        handles = [submit(client, 2.0), submit(client, 2.0)]
        live = running_jobs(s, 2, api)
        engine_sets = sorted(c["HostConfig"]["CpusetCpus"] for c in live)
        names = {c["Config"]["Labels"][L.NAME] for c in live}
        records = [h.wait(60) for h in handles]
        wait_given_back(s, api, names)
    finally:
        client.close()
        worker.stop()
    assert all(r.verdict == "ok" for r in records), [r.summary() for r in records]
    chosen = [r.provenance["cpuset"] for r in records if r.provenance]
    inside = [json.loads(r.stdout) for r in records]
    assert len(engine_sets) == 2 and len(set(engine_sets)) == 2, engine_sets
    assert sorted(chosen) == engine_sets
    assert set(parse(chosen[0])).isdisjoint(parse(chosen[1]))
    assert [list(parse(c)) for c in chosen] == inside


def test_a_pooled_container_gets_its_cores_by_update_and_a_killed_worker_leaks_none(
        settings: Settings, artifacts: Path, api: docker.APIClient) -> None:
    """Given a worker with a warm container, when a --cpus 1 job takes it, then the engine shows
    the set given by the update and the job runs on it; when that worker is SIGKILLed mid-job,
    its set stays held while the container runs and is free once the container has stopped."""
    needs_two_cores()
    s, worker = fleet_worker(settings, artifacts, "cpusetpool", concurrency=1, pool_size=1)
    client = Airlock(s)
    handle = None
    try:
        first = submit(client, 0).wait(60)
        assert first.verdict == "ok" and first.phases and first.phases["pooled"], first.summary()
        assert first.provenance and [list(parse(first.provenance["cpuset"]))] == \
            [json.loads(first.stdout)]
        wait_given_back(s, api)
        handle = submit(client, 30, timeout_s=4)
        [live] = running_jobs(s, 1, api)
        name = live["Config"]["Labels"][L.NAME]
        assert live["Config"]["Labels"][L.ROLE] == L.ROLE_POOL  # a pooled one, updated
        assert parse(live["HostConfig"]["CpusetCpus"]) == cpusets(s, api).held()[name].cpus
        worker.stop(sig=9)  # the whole process group, no clean-up of its own
        assert name in cpusets(s, api, grace_s=0).held()  # still running: still held
        deadline = time.monotonic() + 30  # the launcher kills the job at its deadline
        while api.inspect_container(live["Id"])["State"]["Running"]:
            assert time.monotonic() < deadline, "the orphan container did not stop"
            time.sleep(0.2)
        sets = cpusets(s, api, grace_s=0)
        sets.take("airlock-test-probe", 1.0, time.time())  # any take looks at the engine
        sets.release("airlock-test-probe")
        assert name not in sets.held()
    finally:
        # The job its SIGKILLed worker left running is ended here: the session's database is
        # shared, and another fleet's reconciler would otherwise adopt it into its own queue
        # (and its admission count) once it looks stranded.
        if handle is not None:
            with client.store.engine.begin() as conn:
                conn.execute(sa.update(Job).where(Job.id == uuid.UUID(handle.id)).values(
                    status="finished", verdict="error", error="its worker was SIGKILLed by the test",
                    finished_at=sa.func.now()))
        client.close()
        worker.stop()
        for c in airlock_containers(s.fleet):
            api.remove_container(c["Id"], force=True)
