"""Retention: finished jobs (their rows, output, collected files and attempts) go after
``result_retention_days``. Where outputs are in an object store (tasks/objects.py), a job's
objects go first and its rows after, so no object outlives the rows that index it.

Scheduled without Celery beat: every worker's maintenance thread calls ``run_if_due`` on each
pass, and a Redis key set with NX and an expiry lets exactly one of them purge per
``retention_interval_s`` for a given results database, however many workers and hosts share it.
Live output streams normally expire by themselves (the publisher sets their TTL); one that lost
its TTL (the worker died between writing and setting it) is given one here, never deleted
outright, since it may belong to a job that is still running.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import redis
import redis.exceptions
import structlog
from sqlalchemy.engine import make_url

from base.errors import BrokerUnavailable
from config.settings import Settings
from tasks.outputs import Outputs
from tasks.store import JobStore

log = structlog.get_logger(__name__)
STREAM_PATTERNS = ("airlock:out:*", "airlock:done:*", "airlock:cancel:*")


@dataclass(frozen=True, slots=True)
class RetentionReport:
    jobs_purged: int
    streams_given_ttl: int


def due_key(database_url: str) -> str:
    """One schedule per results database (the password is not part of its identity)."""
    url = make_url(database_url)
    identity = f"{url.host}:{url.port}/{url.database}"
    return f"airlock:retention:due:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def expire_orphan_streams(r: redis.Redis, ttl_s: int, scan_count: int = 500) -> int:
    """Give every Airlock stream without an expiry one (NX: a TTL already set stays)."""
    fixed = 0
    try:
        for pattern in STREAM_PATTERNS:
            for key in r.scan_iter(match=pattern, count=scan_count):
                if r.ttl(key) == -1 and r.expire(key, ttl_s, nx=True):
                    fixed += 1
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"Redis: {exc}") from exc
    return fixed


def purge_jobs(store: JobStore, older_than: timedelta, outputs: Outputs | None = None,
               batch: int = 500) -> int:
    if outputs is None or outputs.objects is None:
        return store.purge_finished(older_than)
    purged = 0
    while ids := store.finished_before(older_than, batch):
        outputs.forget(ids)  # a failure stops here: the rows stay, and the next pass retries
        purged += store.delete_jobs(ids)
    return purged


def purge(store: JobStore, r: redis.Redis, s: Settings,
          outputs: Outputs | None = None) -> RetentionReport:
    jobs = purge_jobs(store, timedelta(days=s.upkeep.result_retention_days), outputs)
    streams = expire_orphan_streams(r, s.streams.ttl_s)
    log.info("retention.purged", jobs=jobs, streams_given_ttl=streams,
             retention_days=s.upkeep.result_retention_days)
    return RetentionReport(jobs, streams)


def run_if_due(store: JobStore, r: redis.Redis, s: Settings,
               outputs: Outputs | None = None) -> RetentionReport | None:
    """Purge if no worker sharing this database did so in the last interval."""
    try:
        due = r.set(due_key(s.database_url), s.hostname, nx=True, ex=int(s.upkeep.retention_interval_s))
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"Redis: {exc}") from exc
    return purge(store, r, s, outputs) if due else None
