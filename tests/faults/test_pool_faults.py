"""F1, F2, F6 and the reaper with the warm pool on (issue 8).

A pooled container is made and started before its job exists, labelled role=pool and without a
job label (labels cannot change after creation); the job's attempt records its id in the
attempts table, which is how the reaper, and this module (``Fleet.job_containers``,
``EventLog.intervals_of``), map it to its job. Each test checks that the job's first attempt
really ran in a pooled container made before the job was submitted.

An idle pooled container whose worker process died exits at once (its launcher reads EOF on
the attach stdin and exits 125); no remove_idle takes it (a SIGKILLed worker runs none, and a
live worker's only at its shutdown), so the reaper does (reason "exited") once it is
START_GRACE_S (30 s) past its creation. The tests wait for that; the pool keeps its default
max age (600 s), which only a running idle container waits for.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from config.settings import Settings
from tests.faults.rig import (
    ENGINE1,
    SANDBOX,
    EventLog,
    Fleet,
    fleet_for,
    overlaps,
    wait_for,
)
from tests.faults.test_f01_f02_worker_killed import alive, container_state, until
from tests.faults.test_f06_cold_shutdown import cold_stop
from tests.services import WorkerProcess
from workers import labels as L
from workers.labels import OWNER
from workers.pool import owner_label
from workers.reaper import START_GRACE_S
from workers.spec import job_labels

pytestmark = [pytest.mark.faults, pytest.mark.integration]
EXITED_AFTER_S = START_GRACE_S + 20  # an exited pooled container goes 30 s after creation


@pytest.fixture
def pool_fleet(fault_base: Settings, fault_logs: Path) -> Iterator[Fleet]:
    with fleet_for(fault_base, fault_logs, pool_size=1) as f:
        yield f


def warm(fleet: Fleet, owner_pid: int, besides: tuple[str, ...] = ()) -> str:
    """Wait for a started, idle pooled container of this worker (other than ``besides``)."""
    def found() -> str:
        return next((c for c in fleet.idle_pool(owner_pid=owner_pid) if c not in besides), "")
    return wait_for(f"a warm container of worker {owner_pid}", found, 30, 0.2)


def assert_pooled_before(events: EventLog, cid: str, submitted: float) -> None:
    """The container was made for the pool (no job label) before the job existed."""
    made = wait_for(f"the create event of {cid[:12]}", lambda: events.creation(cid), 5)
    assert made is not None
    assert (made.role, made.job) == (L.ROLE_POOL, ""), made
    assert made.time < submitted, (made.time, submitted)


def reaped(w: WorkerProcess, reason: str) -> int:
    """How many containers the worker's reaper removed for this reason."""
    return sum(1 for line in w.log().splitlines() if "reaper.removed" in line and reason in line)


def named(fleet: Fleet, prefix: str) -> list[str]:
    return [c["Id"] for c in fleet.containers()
            if any(n.lstrip("/").startswith(prefix) for n in c.get("Names") or [])]


def pooled_job(fleet: Fleet, events: EventLog, w: WorkerProcess,
               seconds: int) -> tuple[str, str, str]:
    """Submit a job of ``seconds`` once ``w`` has a warm container, and check that it runs there
    (made for the pool before the job existed). (job, its container, the refill after it)."""
    pooled = warm(fleet, w.pid)
    submitted = time.time()
    job = fleet.submit(until(seconds), timeout_s=30)
    assert fleet.running_container(job) == pooled
    assert_pooled_before(events, pooled, submitted)
    return job, pooled, warm(fleet, w.pid, besides=(pooled,))


def only_idle_pool_of(fleet: Fleet, owner_pid: int) -> bool:
    """What a live worker keeps: its idle pooled containers and nothing else of the fleet."""
    left = {c["Id"] for c in fleet.containers()}
    return left <= set(fleet.idle_pool(owner_pid=owner_pid, running=False))


def test_f1_pooled_container_of_a_sigkilled_worker(pool_fleet: Fleet) -> None:
    fleet = pool_fleet
    events = EventLog(fleet.settings.fleet).start()
    try:
        w1 = fleet.worker("w1")
        job, orphan, spare = pooled_job(fleet, events, w1, 12)  # spare: the refill after the take
        assert fleet.job_containers(job) == [orphan]
        children = w1.pool_pids()
        w1.kill()
        wait_for("the pool processes to die with their parent",
                 lambda: not any(alive(p) for p in children), 5)
        # The fed container runs on; the idle one's launcher read EOF and exited (125).
        assert container_state(orphan) == "running"
        wait_for("the idle pooled container to exit", lambda: container_state(spare) == "exited", 10)
        assert fleet.broker_holds(job) == "unacked"
        assert fleet.record(job).status == "running"

        fleet.expire_lease(job)
        w2 = fleet.worker("w2")  # its first sweep maps the orphan to its job via attempts
        assert "reaper.removed" in w2.log() and "lease_expired" in w2.log()
        assert container_state(orphan) == ""
        assert fleet.attempts(job)[0].container_removed_at is not None

        record = fleet.wait(job, 60)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 2)
        assert [a.outcome for a in fleet.attempts(job)] == ["lost", "finished"]
        assert fleet.end_events(job) == 1
        ids = fleet.job_containers(job)
        assert len(ids) == 2 and ids[0] == orphan and ids[1] != orphan
        assert len(events.intervals_of(ids)) == 2
        assert not overlaps(fleet.job_intervals(job, events))

        # The dead worker's idle container: no remove_idle ran (its owner was SIGKILLed), so
        # the reaper's "exited", START_GRACE_S after its creation.
        wait_for("the dead worker's idle pooled container to go",
                 lambda: container_state(spare) == "", EXITED_AFTER_S, 0.5)
        assert reaped(w2, "exited")
        assert not fleet.pool_containers(owner_pid=w1.pid)
        wait_for("only w2's idle pool to be left", lambda: only_idle_pool_of(fleet, w2.pid), 15)
    finally:
        events.close()


def test_f2_pooled_container_of_a_sigkilled_pool_process(pool_fleet: Fleet) -> None:
    fleet = pool_fleet
    events = EventLog(fleet.settings.fleet).start()
    try:
        w = fleet.worker()
        job, first, spare = pooled_job(fleet, events, w, 8)
        [child] = w.pool_pids()
        assert spare in named(fleet, f"airlock-pool-{w.pid}-{child}-")
        os.kill(child, signal.SIGKILL)
        wait_for("the idle pooled container to exit", lambda: container_state(spare) == "exited", 10)
        wait_for("the redelivery to be turned away", lambda: "job.not_claimed" in w.log(), 20)
        assert fleet.job_containers(job) == [first] and container_state(first)

        fleet.expire_lease(job)  # the reaper (every second) takes it from here
        record = fleet.wait(job, 60)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 2)
        assert [a.outcome for a in fleet.attempts(job)] == ["lost", "finished"]
        assert "lease_expired" in w.log() and container_state(first) == ""
        assert fleet.end_events(job) == 1
        ids = fleet.job_containers(job)
        assert len(ids) == 2 and len(events.intervals_of(ids)) == 2
        assert not overlaps(fleet.job_intervals(job, events))

        # The killed process's idle container: same owner as the live worker (the owner is the
        # main process), so remove_idle would take it only at the worker's shutdown; the
        # reaper's "exited" takes it first.
        wait_for("the killed process's idle pooled container to go",
                 lambda: container_state(spare) == "", EXITED_AFTER_S, 0.5)
        assert not named(fleet, f"airlock-pool-{w.pid}-{child}-")
        assert alive(w.pid)
        wait_for("only the worker's idle pool to be left", lambda: only_idle_pool_of(fleet, w.pid),
                 15)
    finally:
        events.close()


def test_f6_cold_shutdown_mid_job_on_a_pooled_container(pool_fleet: Fleet) -> None:
    fleet = pool_fleet
    events = EventLog(fleet.settings.fleet).start()
    try:
        w1 = fleet.worker("w1")
        job, _, spare = pooled_job(fleet, events, w1, 10)
        t0 = time.monotonic()
        cold_stop(fleet)
        # The job's container by the unwinding pool process (the job's finally), the idle one
        # by that process's pool drain (worker_process_shutdown); the main process's clear_pool
        # (run after a cold shutdown too) finds whatever is left.
        wait_for("the containers to be removed", lambda: not fleet.containers(), 10)
        cleared = time.monotonic() - t0
        assert container_state(spare) == "" and "pool.cleared" in w1.log()
        assert fleet.record(job).status == "queued"
        assert [a.outcome for a in fleet.attempts(job)] == ["interrupted"]
        assert fleet.attempts(job)[0].container_removed_at is not None
        assert fleet.broker_holds(job) == "queue"

        w2 = fleet.worker("w2")
        record = fleet.wait(job, 60)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 2), cleared
        assert [a.outcome for a in fleet.attempts(job)] == ["interrupted", "finished"]
        assert fleet.end_events(job) == 1
        ids = fleet.job_containers(job)
        assert len(ids) == 2 and not overlaps(fleet.job_intervals(job, events))
        wait_for("only w2's idle pool to be left", lambda: only_idle_pool_of(fleet, w2.pid), 15)
    finally:
        events.close()


def new_job(fleet: Fleet, code: str) -> str:
    return fleet.stored_job(code)


def test_reaper_maps_pooled_containers_to_their_jobs(pool_fleet: Fleet) -> None:
    """Orphans made the way a crashed pooled worker leaves them (role=pool, no job label, an
    owner whose process is gone, the attempt's container id in PostgreSQL): a fresh worker's
    first sweep removes those whose job ended or whose lease expired (releasing that job), an
    idle one past the max age and an idle one that exited (its launcher read EOF) past the
    start grace; it keeps a live job's, young idle ones and another fleet's."""
    fleet = pool_fleet
    s, store = fleet.settings, fleet.client.store
    api = docker.APIClient(base_url=ENGINE1, version="auto")
    made: list[str] = []
    dead_owner = owner_label(s.hostname, 2**22 + 12345)  # above pid_max: no such process

    def pooled(created: float, *, fleet_name: str = s.fleet, exited: bool = False) -> str:
        labels = job_labels(fleet=fleet_name, host=s.hostname, role=L.ROLE_POOL,
                            created=created, deadline=time.time() + 3600) | {OWNER: dead_owner}
        cmd = ["true"] if exited else ["sleep", "300"]
        cid = str(api.create_container(SANDBOX, cmd, labels=labels, network_disabled=True)["Id"])
        made.append(cid)
        api.start(cid)
        if exited:
            api.wait(cid, timeout=30)
        return cid

    def taken(job: str, cid: str) -> None:
        claim = store.claim(job, host=s.hostname, lease_s=600, overhead_s=600)
        assert claim is not None and claim.attempt == 1
        assert store.container_started(job, 1, cid, lease_s=600, need_s=1)

    def present() -> set[str]:
        return {c["Id"] for c in api.containers(all=True)}

    try:
        now = time.time()
        lapsed, finished, live = (new_job(fleet, f"print('{n}')") for n in ("again", 1, 2))
        orphans = {
            "lease expired": pooled(now - 5), "job finished": pooled(now - 5),
            "idle, past the max age": pooled(now - s.pool.max_age_s - 60),
            "idle, exited past the start grace": pooled(now - START_GRACE_S - 10, exited=True)}
        kept = {"live job": pooled(now - 3600), "idle, young": pooled(now),
                "idle, exited just now": pooled(now, exited=True),
                "another fleet's": pooled(now - 3600, fleet_name=s.fleet + "-2")}
        taken(lapsed, orphans["lease expired"])
        fleet.expire_lease(lapsed)
        taken(finished, orphans["job finished"])
        fleet.sql("UPDATE jobs SET status = 'finished', verdict = 'ok' WHERE id = :j", j=finished)
        taken(live, kept["live job"])

        w = fleet.worker()  # its first sweep runs before it says ready
        left = present()
        assert {k: v for k, v in orphans.items() if v in left} == {}
        assert {k: v for k, v in kept.items() if v not in left} == {}
        for reason in ("lease_expired", "job_finished", "pool_expired", "exited"):
            assert reaped(w, reason), reason
        assert fleet.attempts(lapsed)[0].container_removed_at is not None
        assert fleet.attempts(finished)[0].container_removed_at is not None

        # The lapsed job was released and sent again: it runs (pooled, if the new pool is warm).
        record = fleet.wait(lapsed, 60)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "again\n", 2)
        assert [a.outcome for a in fleet.attempts(lapsed)] == ["lost", "finished"]
        assert fleet.job_containers(lapsed)[0] == orphans["lease expired"]
        assert kept["live job"] in present()
        fleet.sql("UPDATE jobs SET status = 'finished', verdict = 'cancelled' WHERE id = :j",
                  j=live)
        wait_for("the live job's container to go once its job ended",
                 lambda: kept["live job"] not in present(), 10)
        assert fleet.attempts(live)[0].container_removed_at is not None
        assert {kept["idle, young"], kept["another fleet's"]} <= present()
    finally:
        for cid in made:
            try:
                api.remove_container(cid, force=True)
            except docker.errors.APIError:
                pass
        api.close()
