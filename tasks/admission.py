"""Admission: waiting jobs into the fleet's queue as its slots free, the I/O around
``tasks.fairshare``.

A submission records its job as waiting (queued, not admitted); whoever calls ``admit`` next
fills the free slots: the submitting client itself, the worker that just ended a job, and every
worker's housekeeping pass. So no one process has to be alive for jobs to flow. One admission
at a time per queue (a transaction-scoped advisory lock; a call that cannot have it within
``LOCK_WAIT`` leaves the work to the holder): it reads the fleet's slots (the hosts' heartbeats,
undrained, on this queue) and the jobs in flight, chooses, marks the chosen admitted, commits,
and only then sends their messages.

Nothing is lost or run twice when an admitter dies: before its commit nothing changed, and
after it an admitted job whose message was never sent is one the reconciler sends again (as
for a message Redis lost); a duplicate message is harmless (the claim is a compare-and-set,
and only an admitted job can be claimed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg.errors
import sqlalchemy as sa
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from config.settings import Settings
from tasks import fairshare
from tasks.store import connected

log = structlog.get_logger(__name__)
LOCK_WAIT = "2s"
Send = Callable[[str, str], bool]

SLOTS_AND_IN_FLIGHT = sa.text(
    "SELECT NULL AS tenant, coalesce(sum(concurrency), 0)::int AS n FROM hosts"
    " WHERE queue = :queue AND NOT drained"
    " AND heartbeat_at > now() - make_interval(secs => :stale_s)"
    " UNION ALL"
    " SELECT tenant, count(*)::int FROM jobs WHERE status = 'running'"
    " OR (status = 'queued' AND admitted_at IS NOT NULL) GROUP BY tenant")
# Each tenant's oldest waiting jobs (an index probe per tenant, on ix_jobs_waiting).
WAITING = sa.text(
    "SELECT t.name, t.weight, t.max_in_flight, w.id, w.queued_at FROM tenants t"
    " JOIN LATERAL (SELECT id, queued_at FROM jobs WHERE tenant = t.name"
    " AND status = 'queued' AND admitted_at IS NULL ORDER BY queued_at, id LIMIT :n) w ON true")
# Whether any job waits at all (a probe of ix_jobs_waiting): most admissions, those of a
# worker whose job just ended while the submitters admit their own, find none, and skip the
# locked transaction.
ANY_WAITING = sa.text(
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued' AND admitted_at IS NULL)")
MARK = sa.text(
    "UPDATE jobs SET admitted_at = now() WHERE id = ANY(CAST(:ids AS uuid[]))"
    " AND status = 'queued' AND admitted_at IS NULL AND NOT cancel_requested"
    " RETURNING id, tenant, profile, left(spec->>'code', 80) AS code, spec->'argv' AS argv")


class _Busy(Exception):
    """Another admission holds the lock: it will see what this one would have."""


@dataclass(frozen=True, slots=True)
class Admitted:
    job_id: str
    description: str  # Flower's task description: tenant, profile, the code's start
    sent: bool = False


def admit(engine: Engine, s: Settings, send: Send) -> list[Admitted]:
    """Fill the fleet's free slots from the waiting jobs; send their messages. Raises
    DatabaseUnavailable; a message Redis did not take is ``sent=False`` (the reconciler's)."""
    try:
        with connected(engine.execution_options(isolation_level="AUTOCOMMIT").connect) as conn:
            if not conn.execute(ANY_WAITING).scalar_one():  # one round trip, no transaction
                return []
        with connected(engine.begin) as conn:
            chosen = _choose_and_mark(conn, s)
    except _Busy:
        return []
    return [Admitted(a.job_id, a.description, send(a.job_id, a.description)) for a in chosen]


def _choose_and_mark(conn: Connection, s: Settings) -> list[Admitted]:
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
    try:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
            sa.func.hashtext(f"airlock:admit:{s.queue}"))))
    except sa_exc.OperationalError as exc:
        if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise _Busy from exc
        raise
    counts = conn.execute(SLOTS_AND_IN_FLIGHT, {"queue": s.queue,
                                                "stale_s": s.tenancy.host_stale_s}).all()
    capacity = next((r.n for r in counts if r.tenant is None), 0)
    in_flight = {r.tenant: r.n for r in counts if r.tenant is not None}
    free = fairshare.free_slots(capacity, sum(in_flight.values()), s.tenancy.admission_headroom)
    if free == 0:
        return []
    tenants: dict[str, fairshare.TenantState] = {}
    for row in conn.execute(WAITING, {"n": free}):
        state = tenants.get(row.name)
        if state is None:
            limit = row.max_in_flight if row.max_in_flight is not None \
                else s.tenancy.max_in_flight
            state = tenants[row.name] = fairshare.TenantState(
                row.name, row.weight, in_flight.get(row.name, 0), limit)
        state.waiting.append(fairshare.Waiting(str(row.id), row.queued_at))
    picked = fairshare.choose(list(tenants.values()), free, fair=s.tenancy.fair_share)
    if not picked:
        return []
    order = {w.job_id: i for i, w in enumerate(picked)}
    marked = conn.execute(MARK, {"ids": list(order)}).all()
    return sorted((Admitted(str(r.id), describe(r.tenant, r.profile, r.code, r.argv))
                   for r in marked), key=lambda a: order[a.job_id])


def describe(tenant: str, profile: str, code: str | None, argv: list[str] | None) -> str:
    """What Flower shows of a job: its tenant, profile and the start of its code (or argv)."""
    text = code if code is not None else " ".join(argv or [])
    flat = text.replace("\n", "⏎ ")
    return f"{tenant} {profile}: {flat if len(flat) <= 60 else flat[:59] + '…'}"

