"""The fleet's hosts table: each worker's heartbeat, and whether an operator drained its host.

A worker writes its row at start and after every housekeeping pass (``beat``); ``airlock fleet``
reads them (``listing``) and drains or undrains a host (``set_drained``), which the worker
reads at its start (``is_drained``), so a restarted worker stays drained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cache
from importlib import metadata
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from base.errors import DatabaseUnavailable
from tasks.models import Host, Job, Status

HOSTS: sa.Table = Host.__table__  # type: ignore[assignment]
JOBS: sa.Table = Job.__table__  # type: ignore[assignment]


PACKAGES = ("airlock", "base", "config", "tasks", "workers")


@cache
def code_version() -> str:
    """Airlock's version, as installed (the package's metadata), and a digest of its source:
    two builds of one version tell apart in ``airlock fleet status`` during an upgrade."""
    try:
        release = metadata.version("airlock")
    except metadata.PackageNotFoundError:
        release = "unknown"
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return f"{release}+{digest.hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class Beat:
    """What a worker says of itself on each heartbeat."""

    name: str
    fleet: str
    queue: str
    engine_id: str
    engine_url: str
    engine_version: str
    version: str
    schema_head: str | None
    concurrency: int
    pool_size: int
    slots_in_use: int = 0
    pool_warm: int = 0


@dataclass(frozen=True, slots=True)
class HostRow:
    """A row of the hosts table, with the jobs PostgreSQL says run there now."""

    name: str
    fleet: str
    queue: str
    engine_id: str | None
    engine_url: str | None
    engine_version: str | None
    version: str | None
    schema_head: str | None
    concurrency: int
    pool_size: int
    slots_in_use: int
    pool_warm: int
    drained: bool
    drained_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    running: int = 0

    @property
    def node(self) -> str:
        """Its worker's Celery node name (tasks/worker.py names it so)."""
        return f"airlock@{self.name}"


@contextmanager
def _translated() -> Iterator[None]:
    """The one boundary where SQLAlchemy's errors become Airlock's."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DatabaseUnavailable(f"PostgreSQL: {type(exc).__name__}: {first}") from exc


def beat(engine: Engine, b: Beat, *, starting: bool = False) -> None:
    """Upsert the worker's row with its heartbeat; a drained flag an operator set is kept."""
    values: dict[str, object] = {**asdict(b), "heartbeat_at": sa.func.now()}
    if starting:
        values["started_at"] = sa.func.now()
    statement = pg_insert(HOSTS).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[HOSTS.c.name],
        set_={k: statement.excluded[k] for k in values if k != "name"})
    with _translated(), engine.begin() as conn:
        conn.execute(statement)


def is_drained(engine: Engine, name: str) -> bool:
    with _translated(), engine.connect() as conn:
        found = conn.execute(sa.select(HOSTS.c.drained).where(HOSTS.c.name == name)).scalar()
    return bool(found)


def set_drained(engine: Engine, name: str, drained: bool) -> bool:
    """Mark the host drained (or not); False when no worker ever ran there."""
    with _translated(), engine.begin() as conn:
        result = conn.execute(sa.update(HOSTS).where(HOSTS.c.name == name).values(
            drained=drained, drained_at=sa.func.now() if drained else None))
    return bool(result.rowcount)


def running_jobs(engine: Engine, name: str) -> int:
    """Jobs PostgreSQL says a worker on this host runs now (claimed, not finished)."""
    with _translated(), engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(JOBS).where(
            JOBS.c.status == Status.RUNNING, JOBS.c.worker_host == name)).scalar_one())


def listing(engine: Engine) -> tuple[list[HostRow], datetime]:
    """Every host, by name, with its running jobs; and the database's clock (heartbeats are
    the database's times, so their age is measured on the same clock)."""
    running = (sa.select(JOBS.c.worker_host, sa.func.count().label("n"))
               .where(JOBS.c.status == Status.RUNNING).group_by(JOBS.c.worker_host).subquery())
    query = (sa.select(HOSTS, sa.func.coalesce(running.c.n, 0).label("running"))
             .join(running, running.c.worker_host == HOSTS.c.name, isouter=True)
             .order_by(HOSTS.c.name))
    with _translated(), engine.connect() as conn:
        rows = [HostRow(**row._mapping) for row in conn.execute(query)]
        clock = conn.execute(sa.select(sa.func.now())).scalar_one()
    return rows, clock
