"""The reaper sweep and the reconciler: the I/O around workers.reaper's pure selection."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import redis
import structlog

from base.errors import AirlockError
from config.settings import Settings
from tasks.store import JobStore
from workers import labels as L
from workers.reaper import ContainerView, JobState, Removal, leftovers, select
from workers.runner import Beside, remove_container
from workers.slots import Slots
from workers.storage import Volumes

log = structlog.get_logger(__name__)
Enqueue = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class SweepReport:
    seen: int
    removed: list[Removal]
    released: list[str]
    left: list[ContainerView]  # what the sweep found and did not remove, pooled jobs resolved
    leftovers: list[str] = field(default_factory=list)  # side resources of containers gone


def list_ours(api: docker.APIClient, fleet: str) -> list[ContainerView]:
    found = api.containers(all=True, filters={"label": [f"{L.MANAGED}=true", f"{L.FLEET}={fleet}"]})
    return [ContainerView.from_labels(c["Id"], c.get("Labels") or {}, c.get("State") == "running")
            for c in found]


def sweep(api: docker.APIClient, store: JobStore, s: Settings,
          volumes: Volumes, enqueue: Enqueue | None = None,
          now: float | None = None, keep: frozenset[str] = frozenset(),
          slots: Slots | None = None) -> SweepReport:
    """Remove this fleet's containers that no live attempt owns; release their jobs. Then,
    with ``slots``, what containers that are gone left beside them."""
    now = time.time() if now is None else now
    beside = Beside(volumes, s.sandbox.io_dir, s.sandbox.spool_dir, slots)
    views = [v for v in list_ours(api, s.fleet) if v.id not in keep]
    pooled = store.jobs_by_container([v.id for v in views if not v.job])
    views = [ContainerView.from_labels(v.id, v.labels, v.running, *pooled[v.id])
             if v.id in pooled else v for v in views]
    raw = store.states([v.job for v in views if v.job])
    jobs = {k: JobState(*state) for k, state in raw.items()}
    removals = select(views, jobs, fleet=s.fleet, now=now, pool_max_age_s=s.pool.max_age_s,
                      lease_grace_s=s.timeouts.lease_grace_s)
    released = []
    for removal in removals:
        c = removal.container
        if not remove_container(api, c.id):
            continue
        name = c.labels.get(L.NAME, "")
        if name:
            beside.remove(name)
        log.info("reaper.removed", container=c.id[:12], job_id=c.job or None,
                 reason=str(removal.reason))
        if c.job not in jobs:
            continue  # PostgreSQL has no such job (or the label is not a job id): no record
        try:
            store.container_removed(c.job, c.attempt)
            if removal.releases_job and store.release_lost(c.job, c.attempt):
                released.append(c.job)
                if enqueue is not None:
                    enqueue(c.job)
        except AirlockError as exc:  # one container's bookkeeping never stops the sweep
            log.warning("reaper.record_failed", job_id=c.job, error=str(exc))
    gone = {r.container.id for r in removals}
    swept = (sweep_leftovers(api, beside, slots, now, s.upkeep.leftover_grace_s)
             if slots is not None else [])
    return SweepReport(len(views), removals, released, [v for v in views if v.id not in gone],
                       swept)


def sweep_leftovers(api: docker.APIClient, beside: Beside, slots: Slots, now: float,
                    grace_s: float) -> list[str]:
    """Side resources (volumes, FIFO and spool folders, cgroup parents) and slots whose
    container is gone (workers.reaper.leftovers decides), removed by Airlock's names only."""
    live = {n.lstrip("/") for c in api.containers(all=True) for n in c.get("Names") or ()}
    gone = leftovers(beside.found(), slots.entries(), live=live, engine=slots.engine, now=now,
                     grace_s=grace_s)
    for name in gone:
        beside.remove(name)
        log.info("reaper.leftovers_removed", name=name)
    return gone


QUEUED = -1.0  # in broker_holdings: the message waits in the queue list
# A queued job's delivery this much past reconcile_after_s is presumed orphaned: a live worker
# claims what it was given at once, or after a retry's countdown (at most 16 s, tasks/jobs.py).
ORPHANED_DELIVERY_S = 30.0


def requeue_key(job_id: str) -> str:
    return f"airlock:requeued:{job_id}"


# What reading an item anyone could have written can raise (tasks.broker sets such items aside;
# one may still wait in the queue while no worker runs): json's RecursionError for deep nesting.
NOT_OURS = (ValueError, KeyError, IndexError, TypeError, RecursionError)


def _job_id(message: object) -> str | None:
    try:
        payload = json.loads(message) if isinstance(message, (bytes, str)) else message
        body = json.loads(base64.b64decode(payload["body"]))  # type: ignore[index]
        return str(body[0][0])
    except NOT_OURS:
        return None


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def broker_holdings(r: redis.Redis, queue: str) -> dict[str, float]:
    """Job ids the broker holds: ``QUEUED`` for a message in the queue list, else the time kombu
    delivered it (its ``unacked`` hash, scored in ``unacked_index``), whose consumer may be dead."""
    held: dict[str, float] = {}
    scored: Any = r.zrange("unacked_index", 0, -1, withscores=True)
    delivered = {_text(k): float(score) for k, score in scored}
    for tag, value in r.hgetall("unacked").items():  # kombu: [message, exchange, routing key]
        try:
            job = _job_id(json.loads(value)[0])
        except NOT_OURS:
            continue  # not kombu's: never ours to judge
        if job is not None:
            held[job] = max(held.get(job, 0.0), delivered.get(_text(tag), 0.0))
    for item in r.lrange(queue, 0, -1):
        job = _job_id(item)
        if job is not None:
            held[job] = QUEUED
    return held


def needs_requeue(status: str, held: float | None, *, now: float, reconcile_after_s: float) -> bool:
    """Pure: whether a stranded job (PostgreSQL says it should run) needs a fresh message.

    A message waiting in the queue list will be delivered. A delivered, unacknowledged one is
    trusted only for a queued job, and only for a while: a live worker claims what it was
    given within moments (or a retry's countdown), and one that was SIGKILLed never acks,
    leaving kombu to restore it only after the visibility timeout. A running job whose lease
    expired and whose run deadline passed has no live holder: its delivery is not trusted.
    Extra messages are harmless: a delivery that cannot claim the job exits without a container.
    """
    if held is None:
        return True
    if held == QUEUED:
        return False
    if status == "running":
        return True
    return now - held > reconcile_after_s + ORPHANED_DELIVERY_S


def reconcile(store: JobStore, r: redis.Redis, s: Settings, enqueue: Enqueue,
              now: float | None = None) -> list[str]:
    """Re-enqueue jobs PostgreSQL says should run but that no live consumer holds; each at most
    once per ``reconcile_after_s``."""
    stranded = store.stranded(older_than_s=s.upkeep.reconcile_after_s)
    if not stranded:
        return []
    now = time.time() if now is None else now
    held = broker_holdings(r, s.queue)
    sent = []
    for job, status in stranded:
        if not needs_requeue(status, held.get(job), now=now, reconcile_after_s=s.upkeep.reconcile_after_s):
            continue
        if not r.set(requeue_key(job), 1, nx=True, ex=max(1, int(s.upkeep.reconcile_after_s))):
            continue
        log.info("reconciler.requeue", job_id=job, status=status)
        enqueue(job)
        sent.append(job)
    return sent
