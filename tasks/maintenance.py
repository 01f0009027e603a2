"""The reaper sweep and the reconciler: the I/O around workers.reaper's pure selection."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import docker
import redis
import structlog

from airlock.errors import AirlockError
from config.settings import Settings
from tasks.store import JobStore
from workers import cgroup
from workers import labels as L
from workers.reaper import ContainerView, JobState, Removal, select
from workers.runner import _remove
from workers.storage import BtrfsVolumes, TmpfsVolumes, Volume

log = structlog.get_logger(__name__)
Enqueue = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SweepReport:
    seen: int
    removed: list[Removal]
    released: list[str]


def list_ours(api: docker.APIClient, fleet: str) -> list[ContainerView]:
    found = api.containers(all=True, filters={"label": [f"{L.MANAGED}=true", f"{L.FLEET}={fleet}"]})
    return [ContainerView.from_labels(c["Id"], c.get("Labels") or {}, c.get("State") == "running")
            for c in found]


def sweep(api: docker.APIClient, store: JobStore, s: Settings,
          volumes: BtrfsVolumes | TmpfsVolumes, enqueue: Enqueue | None = None,
          now: float | None = None, keep: frozenset[str] = frozenset()) -> SweepReport:
    """Remove this fleet's containers that no live attempt owns; release their jobs."""
    now = time.time() if now is None else now
    views = [v for v in list_ours(api, s.fleet) if v.id not in keep]
    pooled = store.jobs_by_container([v.id for v in views if not v.job])
    views = [ContainerView.from_labels(v.id, v.labels, v.running, *pooled[v.id])
             if v.id in pooled else v for v in views]
    raw = store.states([v.job for v in views if v.job])
    jobs = {k: JobState(*state) for k, state in raw.items()}
    removals = select(views, jobs, fleet=s.fleet, now=now, pool_max_age_s=s.pool_max_age_s)
    released = []
    for removal in removals:
        c = removal.container
        if not _remove(api, c.id):
            continue
        name = c.labels.get(L.NAME, "")
        if name:
            _cleanup_storage(volumes, s, name)
        log.info("reaper.removed", container=c.id[:12], job_id=c.job or None,
                 reason=str(removal.reason))
        if c.job:
            store.container_removed(c.job, c.attempt)
        if removal.releases_job and store.release_lost(c.job, c.attempt):
            released.append(c.job)
            if enqueue is not None:
                enqueue(c.job)
    return SweepReport(len(views), removals, released)


def _cleanup_storage(volumes: BtrfsVolumes | TmpfsVolumes, s: Settings, name: str) -> None:
    from pathlib import Path

    path = Path(s.volumes_root) / name if isinstance(volumes, BtrfsVolumes) else None
    try:
        volumes.destroy(Volume(path, {}))
    except AirlockError as exc:
        log.warning("reaper.volume_failed", name=name, error=str(exc))
    cgroup.remove_parent(f"/airlock/{name}")


def broker_job_ids(r: redis.Redis, queue: str) -> set[str]:
    """Job ids the broker still holds: waiting in the queue or delivered but unacknowledged."""
    raw = list(r.lrange(queue, 0, -1))
    raw += [json.loads(v)[0] for v in r.hvals("unacked")]  # kombu: [message, exchange, key]
    ids = set()
    for item in raw:
        try:
            message = json.loads(item) if isinstance(item, (bytes, str)) else item
            body = json.loads(base64.b64decode(message["body"]))
            ids.add(str(body[0][0]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return ids


def reconcile(store: JobStore, r: redis.Redis, s: Settings, enqueue: Enqueue) -> list[str]:
    """Re-enqueue jobs PostgreSQL says should run but that Redis no longer holds."""
    stranded = store.stranded(older_than_s=s.reconcile_after_s)
    if not stranded:
        return []
    held = broker_job_ids(r, s.queue)
    sent = [job for job in stranded if job not in held]
    for job in sent:
        log.info("reconciler.requeue", job_id=job)
        enqueue(job)
    return sent
