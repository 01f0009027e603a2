"""Chaos: jobs of three tenants over two workers on two Docker engines, workers SIGKILLed
and restarted at random, one Redis crash and restart (append-only file on) during the run.
One tenant may have one job in flight, another ten waiting: a sampler checks, all along,
that neither quota is ever exceeded (the feeder waits when a quota refuses).

At the end: every job has exactly one terminal result (one attempt recorded it, and its output
is the job's own), no job ran in two containers at once (from the attempts table and from both
engines' container events), and no Airlock container is left on either engine. It prints its
counts and the longest time a job waited after its worker died.

``AIRLOCK_TEST_CHAOS_POOL_SIZE=1`` runs it with the warm pool on (one warm container per worker
process); the CI run keeps it cold, as it runs the chaos test once.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from airlock.client import Airlock
from base.errors import AirlockError, QuotaExceeded
from tasks.tenancy import TenantStore
from tests.faults.conftest import MakeRedis
from tests.faults.rig import (
    ENGINE1,
    ENGINE2,
    Engine2,
    EventLog,
    Fleet,
    overlaps,
    start_supervised,
    wait_for,
)
from tests.services import WorkerProcess
from workers import labels as L

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
JOBS = 220
BUDGET_S = 240.0
TENANTS = ("chaos-a", "chaos-b", "chaos-c")
QUOTAS = {"chaos-b": {"max_in_flight": 1}, "chaos-c": {"max_queued": 10}}
IN_FLIGHT = ("SELECT count(*) FROM jobs WHERE tenant = 'chaos-b' AND (status = 'running'"
             " OR (status = 'queued' AND admitted_at IS NOT NULL))")
WAITING = ("SELECT count(*) FROM jobs WHERE tenant = 'chaos-c' AND status = 'queued'"
           " AND admitted_at IS NULL")


def code(i: int) -> str:
    return f"import time; time.sleep({0.1 + (i * 7919 % 13) / 10:.1f}); print('job {i}')"


def test_chaos(fleet: Fleet, make_redis: MakeRedis, engine2: Engine2) -> None:
    rng = random.Random(int(os.environ.get("AIRLOCK_CHAOS_SEED", time.time())))
    redis = make_redis(appendonly=True)
    s = fleet.configure(
        broker_url=redis.url, redis_url=redis.url, concurrency=2,
        lease_s=4.0, lease_grace_s=2.0, reaper_interval_s=1.0, reconcile_after_s=3.0,
        startup_grace_s=5.0, backstop_s=2.0,
        pool_size=int(os.environ.get("AIRLOCK_TEST_CHAOS_POOL_SIZE", "0")))
    events = EventLog(s.fleet, (ENGINE1, ENGINE2)).start()
    workers = {
        "chaos-e1": fleet.worker("e1", hostname="chaos-e1", start=False),
        "chaos-e2": fleet.worker("e2", hostname="chaos-e2", docker_host=ENGINE2, start=False),
    }
    refused = sum(restart(w) for w in workers.values())
    kills: list[tuple[float, str, str]] = []  # (time, host, main|pool)
    t0 = time.monotonic()
    jobs: dict[str, int] = {}
    submitted = threading.Event()
    store = TenantStore(fleet.db)
    for tenant in TENANTS:
        store.create(tenant)
        store.set_quota(tenant, **QUOTAS.get(tenant, {}))
    clients = {t: Airlock(s, tenant=t) for t in TENANTS}
    refusals = Counter[str]()
    peaks = {"in_flight": 0, "waiting": 0}

    def submit() -> None:
        for i in range(JOBS):
            client = clients[TENANTS[i % len(TENANTS)]]
            while True:
                try:
                    jobs[client.submit(code=code(i), limits={"timeout_s": 10}).id] = i
                    break
                except QuotaExceeded as exc:
                    refusals[exc.quota] += 1
                    time.sleep(0.5)
                except AirlockError:  # Redis or PostgreSQL away a moment: as a backend would
                    time.sleep(0.5)
            if i % 20 == 19:
                time.sleep(1.5)
        submitted.set()

    def sample() -> None:
        while not sampled.is_set():
            peaks["in_flight"] = max(peaks["in_flight"], int(fleet.sql(IN_FLIGHT)[0][0]))
            peaks["waiting"] = max(peaks["waiting"], int(fleet.sql(WAITING)[0][0]))
            time.sleep(0.05)

    sampled = threading.Event()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    feeder = threading.Thread(target=submit, daemon=True)
    feeder.start()
    redis_restarted = False
    try:
        while time.monotonic() - t0 < BUDGET_S:
            done = finished_count(fleet)
            if submitted.is_set() and done >= JOBS:
                break
            if not redis_restarted and done >= JOBS * 0.35:
                redis.kill()
                time.sleep(1.0)
                redis.start()
                redis_restarted = True
            if submitted.is_set() and done >= JOBS * 0.9:
                time.sleep(0.5)  # the tail: let the last orphans be reaped and re-run
                continue
            host = rng.choice(sorted(workers))
            w = workers[host]
            pools = w.pool_pids()
            if pools and rng.random() < 0.3:
                os.kill(rng.choice(pools), signal.SIGKILL)
                kills.append((time.time(), host, "pool"))
            else:
                w.kill()
                kills.append((time.time(), host, "main"))
                time.sleep(rng.uniform(0.3, 2.0))
                refused += restart(w)
            time.sleep(rng.uniform(2.0, 6.0))
        feeder.join(30)
        assert submitted.is_set(), "the feeder did not finish submitting"
        wait_for("every job to finish", lambda: finished_count(fleet) >= JOBS,
                 max(10.0, BUDGET_S + 60 - (time.monotonic() - t0)), 0.5)
        # With the pool on, each live worker process keeps its warm container: a container
        # no job was given; what must be gone is every container that ran a job, and the dead
        # processes' spares (their launchers see the stdin FIFO's writer go and exit).
        spares = s.pool.size * s.concurrency * len(workers)

        def settled() -> bool:
            ran, idle = left_behind(fleet)
            return not ran and len(idle) <= spares

        try:
            wait_for("no Airlock job container on either engine, spares within the pool's bound",
                     settled, 60)
        except AssertionError as exc:
            left = [(c.get("Names"), c.get("State"), c.get("Status"), c.get("Labels"))
                    for found in left_behind(fleet) for c in found]
            raise AssertionError(f"{exc}; left: {left}") from exc
        # F21: nothing beside a container that is gone (volumes, folders, cgroup parents,
        # uid slots), also of containers a killed worker never got to create.
        wait_for("no side resource of a gone container", lambda: not fleet.side_leftovers(events),
                 s.upkeep.leftover_grace_s + 30)
        elapsed = time.monotonic() - t0
    finally:
        events.close()
        sampled.set()
        sampler.join(5)
        for client in clients.values():
            client.close()

    assert peaks["in_flight"] <= 1 and peaks["waiting"] <= 10, peaks
    report = check(fleet, jobs, events, kills, workers)
    tenants = dict(Counter(str(r[0]) for r in fleet.sql("SELECT tenant FROM jobs")))
    line = (f"chaos: {elapsed:.0f} s, jobs {len(jobs)} {tenants}, quotas never exceeded"
            f" (most in flight of chaos-b {peaks['in_flight']}/1, most waiting of chaos-c"
            f" {peaks['waiting']}/10; refusals {dict(refusals)}), kills {len(kills)}"
            f" ({dict(Counter(k for _, _, k in kills))}), redis restarts 1, worker starts refused"
            f" by the preflight {refused}, {report}")
    print("\n" + line)
    (fleet.logs / "chaos-report.txt").write_text(line + "\n")


def restart(w: WorkerProcess) -> int:
    """Start the worker again, as a supervisor would (tests/faults/rig.py)."""
    return start_supervised(w)


def left_behind(fleet: Fleet) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fleet's containers on both engines: those that ran (or were made for) a job, and
    the warm ones no job was given."""
    given = {str(r[0]) for r in fleet.sql(
        "SELECT container_id FROM attempts WHERE container_id IS NOT NULL")}
    ran: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    for c in fleet.containers(ENGINE1) + fleet.containers(ENGINE2):
        spare = (c.get("Labels") or {}).get(L.ROLE) == L.ROLE_POOL and c["Id"] not in given
        (idle if spare else ran).append(c)
    return ran, idle


def finished_count(fleet: Fleet) -> int:
    return int(fleet.sql("SELECT count(*) FROM jobs WHERE status = 'finished'")[0][0])


def check(fleet: Fleet, jobs: dict[str, int], events: EventLog,
          kills: list[tuple[float, str, str]], workers: dict[str, WorkerProcess]) -> str:
    rows = fleet.sql("SELECT id::text, status, verdict, stdout, error FROM jobs")
    assert len(rows) == len(jobs)
    attempts = fleet.sql(
        "SELECT job_id::text, attempt, worker_host, started_at, container_started_at,"
        " coalesce(container_removed_at, ended_at), outcome FROM attempts ORDER BY job_id, attempt")
    by_job: dict[str, list[tuple[object, ...]]] = {}
    for a in attempts:
        by_job.setdefault(a[0], []).append(tuple(a))

    lost = [r for r in rows if r[1] != "finished"]
    assert not lost, lost[:5]
    verdicts = Counter(r[2] for r in rows)
    for job_id, _, verdict, stdout, error in rows:
        finished = [a for a in by_job.get(job_id, []) if a[6] == "finished"]
        assert len(finished) == 1, (job_id, by_job.get(job_id))  # exactly one terminal result
        if verdict == "ok":
            assert bytes(stdout) == f"job {jobs[job_id]}\n".encode(), (job_id, stdout)
        else:  # only the poison cap may end a job otherwise: it was killed that many times
            assert "gave up after" in (error or ""), (job_id, verdict, error)

    # Never two containers for one job at once: by the attempts table and by both engines.
    for job_id, rows_ in by_job.items():
        spans = [(a[4].timestamp(), (a[5] or datetime.now(a[4].tzinfo)).timestamp(), str(a[1]))
                 for a in rows_ if a[4] is not None]
        assert not overlaps(spans), (job_id, rows_)
    ran = {j: v for j, v in events.run_intervals().items() if j}  # "": preflight canaries
    assert not {j: overlaps(v) for j, v in ran.items() if overlaps(v)}
    assert set(ran) <= set(jobs)

    # Longest wait after a worker died: from the kill to the next attempt's claim, for every
    # attempt that was running on the killed worker at that moment and did not finish.
    waits: list[tuple[float, str]] = []
    detections: list[float] = []  # from the kill to the attempt being marked lost (released)
    for rows_ in by_job.values():
        for a, nxt in itertools.pairwise(rows_):
            if a[6] == "finished":
                continue
            started, retried = a[3].timestamp(), nxt[3].timestamp()
            died = [t for t, host, _ in kills if host == a[2] and started < t < retried]
            if died:
                how = "container reaped" if a[4] is not None else "no container"
                released = a[5].timestamp() if a[5] is not None else retried
                waits.append((retried - max(died), f"{a[6]}, {how}"))
                detections.append(released - max(died))
    longest = max(waits, default=(0.0, "none"))
    logs = "".join(w.log() for w in workers.values())
    reaped = Counter(line.split("reason=")[1].split()[0] for line in logs.splitlines()
                     if "reaper.removed" in line and "reason=" in line)
    redeliveries = sum(len(v) - 1 for v in by_job.values())
    duplicates = logs.count("job.not_claimed") + logs.count("job.result_fenced")
    return (f"redeliveries {redeliveries} (attempts after the first), duplicates prevented"
            f" {duplicates} (deliveries turned away or results fenced), orphans reaped"
            f" {sum(reaped.values())} {dict(reaped)}, requeued by the reconciler"
            f" {logs.count('reconciler.requeue')}, verdicts {dict(verdicts)}, lost: 0,"
            f" longest wait after a worker died {longest[0]:.1f} s ({longest[1]}; {len(waits)}"
            f" jobs waited, median {sorted(w for w, _ in waits)[len(waits) // 2] if waits else 0:.1f} s;"
            f" of which the longest until released {max(detections, default=0.0):.1f} s, the rest"
            f" queueing behind the backlog)")
