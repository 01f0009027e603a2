"""The results store: every state change of a job is one conditional SQL statement.

Claiming is a compare-and-set on (status, lease); each attempt gets a number; every later write
is fenced by that number, so a stale attempt can never overwrite a newer one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as UUID_T
from sqlalchemy.engine import Connection, Engine

from base.errors import DatabaseUnavailable, JobNotFound, JobSpecError
from base.ids import JobId
from tasks import quotas
from tasks.models import Attempt, Job, Status
from tasks.quotas import Quota

now = sa.func.now
JobRow = sa.Row[Any]  # a row of the jobs table, every column


def _seconds(s: float) -> Any:
    return sa.cast(sa.literal(f"{s} seconds"), sa.Interval)


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    attempt: int
    spec: dict[str, Any]
    queued_at: datetime
    claimed_at: datetime
    unfinished: int  # earlier attempts that never ended cleanly (their worker died)
    tenant: str = "default"  # whose job: its secrets are this tenant's


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a finished attempt writes."""

    verdict: str
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    wall_ms: int | None = None
    cpu_ms: int | None = None
    peak_memory_bytes: int | None = None
    egress_bytes: int | None = None  # through the egress proxy, for a job with egress
    evidence: dict[str, Any] | None = None
    phases: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    error: str | None = None
    kept_whole: bool = False  # the output past the row's head is in job_blobs (tasks/blobs.py)
    stdout_dropped: int = 0  # printed past the output cap: kept nowhere
    stderr_dropped: int = 0
    files: dict[str, Any] | None = None  # what was collected (workers/collecting.Collection)


PING_AFTER_IDLE_S = 2.0  # a pooled connection idle this long is checked before it is used


def make_engine(url: str, ping_after_idle_s: float = PING_AFTER_IDLE_S, *, pool: int = 2,
                overflow: int = 4) -> Engine:
    """A pooled engine whose connections are checked (``SELECT 1``) only when they sat idle:
    a connection used a moment ago is alive, and pinging on every checkout costs a round trip
    per transaction. A failed check discards the connection (and the pool's older ones) and
    takes a fresh one, as ``pool_pre_ping`` would."""
    engine = sa.create_engine(url, pool_size=pool, max_overflow=overflow,
                              connect_args={"connect_timeout": 5})

    @sa.event.listens_for(engine, "checkin")
    def _idle_since(dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _check_if_idle(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < ping_after_idle_s:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:
            raise sa_exc.DisconnectionError(str(exc)) from exc

    return engine


# --- the hot path's statements, built once ------------------------------------------------
# Each is one statement (data-modifying CTEs share one snapshot and commit together) built
# with bind parameters at import, so SQLAlchemy compiles it once per process, not per job.

def P(name: str, type_: Any) -> Any:
    """A bind parameter named ``p_<name>``: a plain column name would also become a SET value
    of every UPDATE in the statement whose table has that column."""
    return sa.bindparam(f"p_{name}", type_=type_)


def _params(**values: Any) -> dict[str, Any]:
    return {f"p_{k}": v for k, v in values.items()}


def _secs(name: str) -> Any:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, P(name, type_=sa.Float))


def _fenced_by_params() -> Any:
    return sa.and_(Job.id == P("job_id", type_=UUID_T), Job.attempt == P("attempt", type_=sa.Integer),
                   Job.status == Status.RUNNING)


def _claim_statement() -> Any:
    stale = sa.and_(Job.status == Status.RUNNING, Job.lease_until < now(),
                    Job.run_deadline < now())
    timeout_s = sa.func.coalesce(sa.cast(Job.limits["timeout_s"].astext, sa.Float), 0.0)
    run_deadline = now() + sa.func.make_interval(
        0, 0, 0, 0, 0, 0, timeout_s + P("overhead_s", type_=sa.Float))
    claimed = (
        sa.update(Job)
        .where(Job.id == P("job_id", type_=UUID_T),
               # Only an admitted job (tasks/admission.py): a message for a waiting one
               # (a duplicate, a client's resend) cannot jump its turn.
               sa.or_(sa.and_(Job.status == Status.QUEUED, Job.admitted_at.is_not(None)), stale),
               Job.cancel_requested.is_(False))
        .values(status=Status.RUNNING, attempt=Job.attempt + 1,
                worker_host=P("host", type_=sa.Text), lease_until=now() + _secs("lease_s"),
                run_deadline=run_deadline, started_at=now(), container_id=None)
        .returning(Job.id, Job.attempt, Job.spec, Job.queued_at, Job.started_at, Job.tenant)
        .cte("claimed")
    )
    # One statement, one snapshot: the count sees the attempts before the two writes.
    lost = (sa.update(Attempt)
            .where(Attempt.job_id == sa.select(claimed.c.id).scalar_subquery(),
                   Attempt.outcome.is_(None))
            .values(outcome="lost", ended_at=sa.func.coalesce(Attempt.ended_at, now()))
            .cte("lost"))
    # sa.insert, not the dialect's: the latter as a CTE has no cache key (compiled every time).
    added = (sa.insert(Attempt).from_select(["job_id", "attempt", "worker_host"], sa.select(
        claimed.c.id, claimed.c.attempt, P("host", type_=sa.Text))).cte("added"))
    unfinished = sa.select(sa.func.count()).where(
        Attempt.job_id == claimed.c.id,
        sa.or_(Attempt.outcome.is_(None), Attempt.outcome == "lost")).scalar_subquery()
    return sa.select(claimed.c.attempt, claimed.c.spec, claimed.c.queued_at,
                     claimed.c.started_at, unfinished.label("unfinished"),
                     claimed.c.tenant).add_cte(lost, added)


def _container_started_statement() -> Any:
    noted = (sa.update(Attempt)
             .where(Attempt.job_id == P("job_id", type_=UUID_T),
                    Attempt.attempt == P("attempt", type_=sa.Integer))
             .values(container_id=P("container_id", type_=sa.Text), container_started_at=now())
             .returning(Attempt.attempt).cte("noted"))
    fed = (sa.update(Job)
           .where(_fenced_by_params(), Job.run_deadline > now() + _secs("need_s"))
           .values(container_id=P("container_id", type_=sa.Text),
                   lease_until=now() + _secs("lease_s"))
           .returning(Job.id).cte("fed"))
    return sa.select(sa.select(sa.func.count()).select_from(fed).scalar_subquery()).add_cte(noted)


RESULT_COLUMNS = ("verdict", "exit_code", "signal", "stdout", "stderr", "stdout_bytes",
                  "stderr_bytes", "stdout_truncated", "stderr_truncated", "wall_ms", "cpu_ms",
                  "peak_memory_bytes", "egress_bytes", "evidence", "phases", "provenance", "files",
                  "error")


def _finish_statements() -> tuple[Any, Any]:
    """(the result write, the look again at whether this attempt's write already went in)."""
    cols = Job.__table__.c
    values: dict[str, Any] = {name: P(name, type_=cols[name].type) for name in RESULT_COLUMNS}
    done = (sa.update(Job).where(_fenced_by_params())
            .values(status=Status.FINISHED, finished_at=now(), lease_until=None, **values)
            .returning(Job.id).cte("done"))
    wrote = sa.exists(sa.select(done.c.id))
    removed_at = sa.case((P("container_removed", type_=sa.Boolean),
                          sa.func.coalesce(Attempt.container_removed_at, now())),
                         else_=Attempt.container_removed_at)
    ended = (sa.update(Attempt)
             .where(Attempt.job_id == P("job_id", type_=UUID_T),
                    Attempt.attempt == P("attempt", type_=sa.Integer), Attempt.outcome.is_(None))
             .values(ended_at=now(), container_removed_at=removed_at,
                     outcome=sa.case((wrote, "finished"), else_="stale"))
             .returning(Attempt.attempt).cte("ended"))
    before = sa.exists(sa.select(Attempt.attempt).where(
        Attempt.job_id == P("job_id", type_=UUID_T),
        Attempt.attempt == P("attempt", type_=sa.Integer), Attempt.outcome == "finished"))
    return (sa.select(wrote.label("wrote"), before.label("before")).add_cte(ended),
            sa.select(before))


def _add_phases_statement() -> Any:
    # Onto an object only: a row's phases are an object or SQL NULL (and never turn into an
    # array by a jsonb || on JSON null).
    current = sa.case((sa.func.jsonb_typeof(Job.phases) == "object", Job.phases),
                      else_=sa.text("'{}'::jsonb"))
    merged = current.op("||")(P("phases", type_=JSONB))
    return sa.update(Job).where(Job.id == P("job_id", type_=UUID_T)).values(phases=merged)


# The dialect's INSERT ... ON CONFLICT has no cache key (compiled for every submit); as text it
# is compiled once.
CREATE = sa.text(
    "INSERT INTO jobs (id, tenant, batch_id, spec, profile, image, limits, idempotency_key,"
    " label, status, attempt, cancel_requested, stdout_truncated, stderr_truncated)"
    " VALUES (:id, :tenant, :batch_id, :spec, :profile, :image, :limits, :idempotency_key,"
    f" :label, '{Status.QUEUED.value}', 0, false, false, false)"
    " ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING *"
).bindparams(sa.bindparam("id", type_=UUID_T), sa.bindparam("batch_id", type_=UUID_T),
             sa.bindparam("spec", type_=JSONB),
             sa.bindparam("limits", type_=JSONB)).columns(*Job.__table__.c)
# The tenant's row, locked: its counted submissions go one at a time (a quota holds exactly).
LOCK_TENANT = sa.text("SELECT 1 FROM tenants WHERE name = :tenant FOR UPDATE")
# This submission counted in its minute, with the tenant's jobs waiting their turn (the
# partial index ix_jobs_waiting answers) and today's CPU.
COUNT_SUBMISSION = sa.text(
    "WITH c AS (INSERT INTO submission_counts AS s (tenant, minute, n)"
    " VALUES (:tenant, date_trunc('minute', now()), 1)"
    " ON CONFLICT (tenant, minute) DO UPDATE SET n = s.n + 1 RETURNING n)"
    " SELECT (SELECT n FROM c) AS this_minute,"
    " (SELECT count(*) FROM jobs WHERE tenant = :tenant AND status = 'queued'"
    "  AND admitted_at IS NULL) AS queued,"
    " (SELECT coalesce(sum(cpu_ms), 0) FROM usage_days WHERE tenant = :tenant"
    "  AND day = (now() AT TIME ZONE 'UTC')::date) AS cpu_ms_today")
CLAIM = _claim_statement()
CONTAINER_STARTED = _container_started_statement()
FINISH, FINISHED_BEFORE = _finish_statements()
ADD_PHASES = _add_phases_statement()
# The attempt's removal noted (a data-modifying CTE) and the job's phases merged, at once.
REMOVED_AFTER = ADD_PHASES.add_cte(
    sa.update(Attempt).where(Attempt.job_id == P("job_id", type_=UUID_T),
                             Attempt.attempt == P("attempt", type_=sa.Integer),
                             Attempt.container_removed_at.is_(None))
    .values(container_removed_at=now()).returning(Attempt.attempt).cte("removed"))
# A job's row by id (every client wait ends with one): built once, its columns as they are.
GET = sa.select(*Job.__table__.c).where(Job.__table__.c.id == sa.bindparam("id", type_=UUID_T))


@contextmanager
def connected(open_: Callable[[], AbstractContextManager[Connection]]) -> Iterator[Connection]:
    """A connection from ``open_``; PostgreSQL out of reach is DatabaseUnavailable."""
    try:
        with open_() as conn:
            yield conn
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise DatabaseUnavailable(f"PostgreSQL: {exc.orig or exc}") from exc


def _truncated(dropped: int, kept_whole: bool, total: int, head: int, keep: int) -> bool:
    """Whether less is stored than the job printed: past its cap, or past the row's head
    when the rest was not kept."""
    return dropped > 0 or (not kept_whole and total > min(head, keep))


class Repository:
    """Statements over one engine: in a transaction, or one statement on its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # One statement is its own transaction: no BEGIN and COMMIT round trips around it.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _tx(self) -> AbstractContextManager[Connection]:
        """A connection in a transaction, committed at the end of the block."""
        return connected(self.engine.begin)

    def _statement(self) -> AbstractContextManager[Connection]:
        """A connection for exactly one statement, atomic by itself (the hot path's writes are
        single statements whose parts are data-modifying CTEs)."""
        return connected(self._autocommit.connect)


class JobStore(Repository):
    def create(self, **job: Any) -> tuple[JobId, bool]:
        """Insert a queued job (``create_row``'s arguments); its id, and whether it is new."""
        row, created = self.create_row(**job)
        return JobId(str(row.id)), created

    def create_row(self, *, spec: dict[str, Any], profile: str, image: str,
                   limits: dict[str, Any], idempotency_key: str | None, label: str | None,
                   tenant: str = "default", batch_id: str | None = None,
                   quota: Quota | None = None) -> tuple[JobRow, bool]:
        """Insert a waiting job of ``tenant`` and return its row; with an idempotency key the
        tenant used before, return that job's row (and False). With a ``quota`` that counts,
        the tenant's submissions are taken one at a time (its row locked) and one over a
        quota raises QuotaExceeded with nothing stored."""
        params = {"id": uuid.uuid4(), "tenant": tenant, "spec": spec, "profile": profile,
                  "image": image, "limits": limits, "idempotency_key": idempotency_key,
                  "label": label, "batch_id": uuid.UUID(batch_id) if batch_id else None}
        counted = quota is not None and quota.counted
        with self._tx() if counted else self._statement() as conn:
            if counted and conn.execute(LOCK_TENANT, {"tenant": tenant}).first() is None:
                raise JobSpecError("tenant", f"no tenant {tenant!r}")
            try:
                created = conn.execute(CREATE, params).first()
            except sa_exc.IntegrityError as exc:  # the tenants table does not have it
                raise JobSpecError("tenant", f"no tenant {tenant!r}") from exc
            if created is None:
                existing = conn.execute(sa.select(*Job.__table__.c).where(
                    Job.tenant == tenant, Job.idempotency_key == idempotency_key)).one()
                return existing, False
            if counted:
                assert quota is not None
                found = conn.execute(COUNT_SUBMISSION, {"tenant": tenant}).one()
                refused = quotas.refusal(quota, quotas.Counts(
                    queued=found.queued, this_minute=found.this_minute,
                    cpu_ms_today=found.cpu_ms_today), datetime.now(UTC))
                if refused is not None:
                    raise refused  # the transaction, the job and the count with it, rolls back
            return created, True

    def get(self, job_id: JobId) -> JobRow:
        """The job's row, every column (``airlock.records.JobRecord.from_row`` reads it)."""
        with self._statement() as conn:
            row = conn.execute(GET, {"id": uuid.UUID(job_id)}).first()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        return row

    def claim(self, job_id: str, *, host: str, lease_s: float, overhead_s: float) -> Claim | None:
        """Take the job for a new attempt, or return None when it is not ours to run.

        The attempt's run deadline is ``overhead_s`` plus the job's own timeout from now: its
        payload is sent only while that leaves the job's whole timeout and backstop
        (``container_started``), and the launcher kills the job by then even if the worker
        died. A running job may be taken over only when its lease expired and that deadline
        passed (or the reaper removed its container and released it), so two containers never
        run one job at once.
        """
        params = _params(job_id=uuid.UUID(job_id), host=host, lease_s=lease_s,
                         overhead_s=overhead_s)
        with self._statement() as conn:
            row = conn.execute(CLAIM, params).first()
        if row is None:
            return None
        return Claim(job_id, row.attempt, row.spec, row.queued_at, row.started_at, row.unfinished,
                     row.tenant)

    def _fenced(self, job_id: str, attempt: int) -> Any:
        return sa.and_(Job.id == uuid.UUID(job_id), Job.attempt == attempt,
                       Job.status == Status.RUNNING)

    def container_started(self, job_id: str, attempt: int, container_id: str, *,
                          lease_s: float, need_s: float) -> bool:
        """Record the attempt's container; True when the job may be fed to it now: the attempt
        still owns the job and its run deadline leaves ``need_s`` (the job's timeout plus the
        backstop). Renews the lease. On False the caller removes the container unfed."""
        params = _params(job_id=uuid.UUID(job_id), attempt=attempt, container_id=container_id,
                         lease_s=lease_s, need_s=need_s)
        with self._statement() as conn:
            return bool(conn.execute(CONTAINER_STARTED, params).scalar_one() == 1)

    def container_removed(self, job_id: str, attempt: int) -> None:
        with self._statement() as conn:
            conn.execute(sa.update(Attempt).where(
                Attempt.job_id == uuid.UUID(job_id), Attempt.attempt == attempt,
                Attempt.container_removed_at.is_(None),
            ).values(container_removed_at=now()))

    def removed_after(self, job_id: str, attempt: int, phases: dict[str, Any]) -> None:
        """An attempt's container removed after its result was written: noted on the attempt,
        and ``phases`` (the removal's time) merged into the job's, in one statement (its parts
        each idempotent)."""
        with self._statement() as conn:
            conn.execute(REMOVED_AFTER, _params(job_id=uuid.UUID(job_id), attempt=attempt,
                                                phases=phases))

    def renew(self, job_id: str, attempt: int, lease_s: float) -> tuple[bool, bool]:
        """Extend the lease; return (still ours, cancel requested)."""
        stmt = (sa.update(Job).where(self._fenced(job_id, attempt))
                .values(lease_until=now() + _seconds(lease_s)).returning(Job.cancel_requested))
        with self._statement() as conn:
            row = conn.execute(stmt).first()
        return (row is not None, bool(row and row.cancel_requested))

    def finish(self, job_id: str, attempt: int, outcome: Outcome, keep_bytes: int, *,
               container_removed: bool = False) -> bool:
        """Write the result of this attempt; False when a newer attempt owns the job.

        One statement: the job's row (fenced by the attempt), the attempt's end (and, when the
        caller removed its container, when), and whether an earlier try of this same write
        already went through (a retried write whose first COMMIT's reply was lost)."""
        params = _params(
            job_id=uuid.UUID(job_id), attempt=attempt, container_removed=container_removed,
            verdict=outcome.verdict, exit_code=outcome.exit_code, signal=outcome.signal,
            stdout=outcome.stdout[:keep_bytes], stderr=outcome.stderr[:keep_bytes],
            stdout_bytes=outcome.stdout_bytes, stderr_bytes=outcome.stderr_bytes,
            stdout_truncated=_truncated(outcome.stdout_dropped, outcome.kept_whole,
                                        outcome.stdout_bytes, len(outcome.stdout), keep_bytes),
            stderr_truncated=_truncated(outcome.stderr_dropped, outcome.kept_whole,
                                        outcome.stderr_bytes, len(outcome.stderr), keep_bytes),
            wall_ms=outcome.wall_ms, cpu_ms=outcome.cpu_ms,
            peak_memory_bytes=outcome.peak_memory_bytes, egress_bytes=outcome.egress_bytes,
            evidence=outcome.evidence,
            phases=outcome.phases, provenance=outcome.provenance, files=outcome.files,
            error=outcome.error,
        )
        with self._statement() as conn:
            row = conn.execute(FINISH, params).one()
            if row.wrote or row.before:
                return True
            # A try of this write that committed while this one waited on the row is not in
            # this statement's snapshot: look again with a fresh one.
            return conn.execute(FINISHED_BEFORE, params).scalar_one() is True

    def release(self, job_id: str, attempt: int, reason: str) -> bool:
        """Hand the job back to the queue (an infrastructure failure; the retry claims it)."""
        with self._tx() as conn:
            done = conn.execute(sa.update(Job).where(self._fenced(job_id, attempt)).values(
                status=Status.QUEUED, lease_until=None, run_deadline=None, container_id=None))
            conn.execute(sa.update(Attempt).where(
                Attempt.job_id == uuid.UUID(job_id), Attempt.attempt == attempt
            ).values(ended_at=now(), outcome=reason[:32]))
        return done.rowcount == 1

    def fail_queued(self, job_id: str, verdict: str, error: str) -> bool:
        """End a job that never got (or may no longer get) an attempt: cancel, poison, give up."""
        with self._statement() as conn:
            done = conn.execute(sa.update(Job).where(
                Job.id == uuid.UUID(job_id), Job.status != Status.FINISHED
            ).values(status=Status.FINISHED, verdict=verdict, error=error, finished_at=now(),
                     lease_until=None))
        return done.rowcount == 1

    def request_cancel(self, job_id: JobId) -> str:
        """Cancel: a queued job ends at once; a running one is flagged for its worker."""
        key = uuid.UUID(job_id)
        with self._tx() as conn:
            done = conn.execute(sa.update(Job).where(
                Job.id == key, Job.status == Status.QUEUED
            ).values(status=Status.FINISHED, verdict="cancelled", cancel_requested=True,
                     finished_at=now(), error="cancelled before it started"))
            if done.rowcount:
                return "cancelled"
            running = conn.execute(sa.update(Job).where(
                Job.id == key, Job.status == Status.RUNNING
            ).values(cancel_requested=True))
            if running.rowcount:
                return "cancelling"
            exists = conn.execute(sa.select(Job.status).where(Job.id == key)).scalar()
        if exists is None:
            raise JobNotFound(f"no job {job_id}")
        return "already_finished"

    def end_cancelled(self, job_id: str) -> bool:
        """End a job flagged for cancellation that no live attempt will end: handed back to
        the queue after its cancel (an infrastructure retry), or its worker died. Its claim is
        refused, so without this it would stay unfinished and be re-enqueued forever."""
        stale = sa.and_(Job.status == Status.RUNNING, Job.lease_until < now(),
                        Job.run_deadline < now())
        key = uuid.UUID(job_id)
        with self._tx() as conn:
            done = conn.execute(sa.update(Job).where(
                Job.id == key, Job.cancel_requested.is_(True),
                sa.or_(Job.status == Status.QUEUED, stale),
            ).values(status=Status.FINISHED, verdict="cancelled", finished_at=now(),
                     lease_until=None, error="cancelled; it was not running any more"))
            if done.rowcount:
                conn.execute(sa.update(Attempt).where(
                    Attempt.job_id == key, Attempt.outcome.is_(None)
                ).values(outcome="lost", ended_at=now()))
        return done.rowcount == 1

    def expired_leases(self, limit: int = 500) -> list[tuple[str, int]]:
        """Running jobs whose worker stopped renewing (for the reaper and reconciler)."""
        with self._statement() as conn:
            rows = conn.execute(sa.select(Job.id, Job.attempt).where(
                Job.status == Status.RUNNING, Job.lease_until < now()
            ).limit(limit)).all()
        return [(str(r.id), r.attempt) for r in rows]

    def states(self, job_ids: list[str]) -> dict[str, tuple[str, int, float]]:
        """(status, attempt, seconds the lease is overdue) of each known job id: negative while
        the lease holds, infinite when there is none. Ids that are not UUIDs are unknown."""
        keys = []
        for j in job_ids:
            try:
                keys.append(uuid.UUID(j))
            except ValueError:
                continue
        if not keys:
            return {}
        overdue = sa.func.extract("epoch", now() - Job.lease_until)
        with self._statement() as conn:
            rows = conn.execute(sa.select(Job.id, Job.status, Job.attempt,
                                          overdue.label("overdue")).where(Job.id.in_(keys))).all()
        return {str(r.id): (r.status, r.attempt,
                            float("inf") if r.overdue is None else float(r.overdue)) for r in rows}

    def jobs_by_container(self, container_ids: list[str]) -> dict[str, tuple[str, int]]:
        if not container_ids:
            return {}
        with self._statement() as conn:
            rows = conn.execute(sa.select(Attempt.container_id, Attempt.job_id, Attempt.attempt)
                                .where(Attempt.container_id.in_(container_ids))).all()
        return {r.container_id: (str(r.job_id), r.attempt) for r in rows}

    def release_lost(self, job_id: str, attempt: int) -> bool:
        """The reaper removed this attempt's container: the job may be claimed again now."""
        with self._tx() as conn:
            done = conn.execute(sa.update(Job).where(
                self._fenced(job_id, attempt), Job.lease_until < now()
            ).values(status=Status.QUEUED, lease_until=None, run_deadline=None))
            conn.execute(sa.update(Attempt).where(
                Attempt.job_id == uuid.UUID(job_id), Attempt.attempt == attempt,
                Attempt.ended_at.is_(None),
            ).values(ended_at=now(), outcome="lost", container_removed_at=now()))
        return done.rowcount == 1

    def stranded(self, older_than_s: float, limit: int = 500) -> list[tuple[str, str]]:
        """(job id, status) of jobs admitted longer than ``older_than_s`` ago and still queued,
        and of running jobs free to take over (lease expired and run deadline passed). A job
        not yet admitted waits its turn (tasks/admission.py): it is not stranded."""
        cutoff = now() - _seconds(older_than_s)
        with self._statement() as conn:
            rows = conn.execute(sa.select(Job.id, Job.status).where(sa.or_(
                sa.and_(Job.status == Status.QUEUED, Job.admitted_at < cutoff,
                        sa.or_(Job.lease_until.is_(None), Job.lease_until < cutoff)),
                sa.and_(Job.status == Status.RUNNING, Job.lease_until < now(),
                        Job.run_deadline < now()),
            )).order_by(Job.queued_at).limit(limit)).all()
        return [(str(r.id), r.status) for r in rows]

    def add_phases(self, job_id: str, phases: dict[str, Any]) -> None:
        with self._statement() as conn:
            conn.execute(ADD_PHASES, _params(job_id=uuid.UUID(job_id), phases=phases))

    def finished_before(self, older_than: timedelta, limit: int = 500) -> list[str]:
        """Ids of finished jobs older than ``older_than`` (retention's next batch)."""
        with self._statement() as conn:
            rows = conn.execute(sa.select(Job.id).where(
                Job.status == Status.FINISHED, Job.finished_at < now() - older_than
            ).limit(limit)).scalars()
            return [str(r) for r in rows]

    def delete_jobs(self, job_ids: list[str]) -> int:
        """Delete these jobs (their attempts, outputs and files with them)."""
        with self._statement() as conn:
            done = conn.execute(sa.delete(Job).where(Job.id.in_([uuid.UUID(j) for j in job_ids])))
        return done.rowcount

    def purge_finished(self, older_than: timedelta) -> int:
        """Delete the jobs that ended before ``older_than`` (their usage stays, by day), and
        the submission counts of past minutes (a rate quota reads the current one)."""
        with self._statement() as conn:
            done = conn.execute(sa.delete(Job).where(
                Job.status == Status.FINISHED, Job.finished_at < now() - older_than))
        with self._statement() as conn:
            conn.execute(sa.text("DELETE FROM submission_counts"
                                 " WHERE minute < now() - interval '1 hour'"))
        return done.rowcount
