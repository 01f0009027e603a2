"""Retention: the worker's maintenance pass purges finished jobs older than the retention (rows,
output and attempts), keeps newer and unfinished ones, gives leaked output streams an expiry,
and does so once per interval per database however many workers share it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from config.settings import Settings
from tasks import retention, streams
from tasks.housekeeping import Housekeeping
from tests.services import scratch_database


@pytest.fixture
def scratch_settings(settings: Settings) -> Iterator[Settings]:
    """A database of its own: retention is scheduled per database, and the session's workers
    already purged theirs when they started."""
    with scratch_database("airlock_ret") as url:
        tag = uuid.uuid4().hex[:8]
        yield settings.but(**{
            "database_url": url, "fleet": f"ret-{tag}", "queue": f"ret-{tag}",
            "result_retention_days": 30.0, "retention_interval_s": 3600.0})


def _job(client: Airlock, status: str, age_days: float | None) -> str:
    """A job row as a finished (or still queued) job of that age would leave it."""
    job_id, _ = client.store.create(spec={"code": "print(1)"}, profile="python",
                                    image="airlock/sandbox:latest", limits={},
                                    idempotency_key=None, label=None)
    with client.store.engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE jobs SET status = :status, stdout = 'output', queued_at = now() - :age,"
            " finished_at = CASE WHEN :finished THEN now() - :age END WHERE id = :id"),
            {"status": status, "finished": status == "finished",
             "age": timedelta(days=age_days or 0), "id": job_id})
        conn.execute(sa.text("INSERT INTO attempts (job_id, attempt, worker_host, outcome)"
                             " VALUES (:id, 1, 'h', 'finished')"), {"id": job_id})
        conn.execute(sa.text("INSERT INTO job_files (job_id, attempt, n, path, status, size)"
                             " VALUES (:id, 1, 0, 'out/a', 'collected', 1)"), {"id": job_id})
        conn.execute(sa.text("INSERT INTO job_blobs (job_id, attempt, blob, seq, raw_bytes, data)"
                             " VALUES (:id, 1, 'file:0', 0, 1, 'x')"), {"id": job_id})
    return job_id


def _rows(client: Airlock, table: str, column: str, ids: list[str]) -> set[str]:
    with client.store.engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT {column}::text FROM {table} WHERE {column}::text"
                                     " = ANY(:ids)"), {"ids": ids}).scalars()
        return set(found)


def _maintenance_pass(s: Settings) -> None:
    """One pass of a worker's maintenance thread (reaper sweep, reconcile, retention)."""
    housekeeping = Housekeeping(s)
    try:
        housekeeping.once()
    finally:
        housekeeping.close()


@pytest.mark.integration
def test_maintenance_purges_old_finished_jobs_once_per_interval(
        scratch_settings: Settings) -> None:
    s = scratch_settings
    client = Airlock(s)
    leaked, expiring = streams.output_key(str(uuid.uuid4())), streams.done_key(str(uuid.uuid4()))
    key = retention.due_key(s.database_url)
    try:
        old = _job(client, "finished", 45)
        recent = _job(client, "finished", 2)
        old_queued = _job(client, "queued", 45)  # not finished: never purged
        client.redis.xadd(leaked, {"t": "stdout", "d": b"x"})  # no expiry: its worker died
        client.redis.xadd(expiring, {"d": b"{}"})
        client.redis.expire(expiring, 100)

        _maintenance_pass(s)
        ids = [old, recent, old_queued]
        assert _rows(client, "jobs", "id", ids) == {recent, old_queued}
        assert _rows(client, "attempts", "job_id", ids) == {recent, old_queued}
        assert _rows(client, "job_files", "job_id", ids) == {recent, old_queued}  # files too
        assert _rows(client, "job_blobs", "job_id", ids) == {recent, old_queued}
        assert 0 < client.redis.ttl(leaked) <= s.streams.ttl_s
        assert 0 < client.redis.ttl(expiring) <= 100  # an expiry already set is left alone
        assert 0 < client.redis.ttl(key) <= s.upkeep.retention_interval_s

        # Within the interval nobody purges again, not even another worker of the database.
        another_old = _job(client, "finished", 31)
        _maintenance_pass(s.but(**{"hostname": "another-host"}))
        assert _rows(client, "jobs", "id", [another_old]) == {another_old}

        client.redis.delete(key)  # the interval is over
        assert retention.run_if_due(client.store, client.redis, s) == retention.RetentionReport(1, 0)
        assert _rows(client, "jobs", "id", [another_old, recent]) == {recent}
    finally:
        client.redis.delete(leaked, expiring, key)
        client.close()


def test_the_schedule_is_per_database_and_ignores_the_password() -> None:
    a = retention.due_key("postgresql+psycopg://airlock:one@db:5432/airlock")
    assert a == retention.due_key("postgresql+psycopg://airlock:two@db:5432/airlock")
    assert a != retention.due_key("postgresql+psycopg://airlock:one@db:5432/other")
