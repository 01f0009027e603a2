"""Reading jobs as a tenant sees them: one job, a page of them, a batch and its progress.

A tenant sees its own jobs only: another tenant's job is "no job", exactly as an unknown id
(``JobNotFound``); ``tenant=None`` (an admin key) sees all. Pages are keyset-paginated, newest
first, on (queued_at, id): stable while jobs come and go, no OFFSET scans.
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from base.errors import AirlockError, JobNotFound
from base.ids import JobId
from tasks.models import Batch, Job
from tasks.store import GET, JobRow, connected

MAX_PAGE = 200
BATCH_KEYS = uuid.UUID("5d1c3b0e-7a4f-4e0b-9a57-2f4a3c8e9b61")  # namespace of keyed batch ids


class BadCursor(AirlockError):
    """The page cursor is not one this API gave."""


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = None
    label: str | None = None
    since: datetime | None = None  # queued at or after
    until: datetime | None = None  # queued before


def cursor_of(queued_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{queued_at.isoformat()}|{job_id}".encode()).decode()


def parse_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    try:
        when, _, job_id = base64.urlsafe_b64decode(text.encode()).decode().partition("|")
        return datetime.fromisoformat(when), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor: not a cursor this API gave") from exc


class Lookup:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def job(self, job_id: JobId, tenant: str | None) -> JobRow:
        query = GET if tenant is None else GET.where(Job.__table__.c.tenant == tenant)
        with connected(self.engine.connect) as conn:
            row = conn.execute(query, {"id": uuid.UUID(job_id)}).first()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        return row

    def page(self, tenant: str | None, filters: Filters, after: str | None = None,
             limit: int = 50) -> tuple[list[JobRow], str | None]:
        """Up to ``limit`` jobs, newest first, and the cursor of the next page (None: last)."""
        jobs = Job.__table__.c
        query = sa.select(*jobs).order_by(jobs.queued_at.desc(), jobs.id.desc())
        conditions = [c for c in (
            jobs.tenant == tenant if tenant is not None else None,
            jobs.status == filters.status if filters.status else None,
            jobs.label == filters.label if filters.label else None,
            jobs.queued_at >= filters.since if filters.since else None,
            jobs.queued_at < filters.until if filters.until else None,
        ) if c is not None]
        if after:
            when, last = parse_cursor(after)
            conditions.append(sa.tuple_(jobs.queued_at, jobs.id) < sa.tuple_(
                sa.literal(when), sa.literal(last, type_=jobs.id.type)))
        size = max(1, min(limit, MAX_PAGE))
        with connected(self.engine.connect) as conn:
            rows = list(conn.execute(query.where(*conditions).limit(size + 1)).all())
        more = len(rows) > size
        rows = rows[:size]
        return rows, cursor_of(rows[-1].queued_at, str(rows[-1].id)) if more else None

    def new_batch(self, tenant: str, items: int, invalid: int, key: str | None = None) -> str:
        """A batch's id. With an idempotency key, the same key of the same tenant names the
        same batch (made once; again, it is only named)."""
        batch_id = uuid.uuid4() if key is None else uuid.uuid5(BATCH_KEYS, f"{tenant}\0{key}")
        stmt = pg_insert(Batch).values(id=batch_id, tenant=tenant, items=items, invalid=invalid)
        with connected(self.engine.begin) as conn:
            conn.execute(stmt.on_conflict_do_nothing())
        return str(batch_id)

    def batch(self, batch_id: str, tenant: str | None) -> dict[str, Any]:
        """The batch's counts: lines, invalid ones, jobs by status and by verdict."""
        try:
            key = uuid.UUID(batch_id)
        except ValueError as exc:
            raise JobNotFound(f"no batch {batch_id[:64]!r}") from exc
        with connected(self.engine.connect) as conn:
            head = conn.execute(sa.select(Batch.__table__).where(
                Batch.id == key, *([Batch.tenant == tenant] if tenant is not None else [])
            )).first()
            if head is None:
                raise JobNotFound(f"no batch {batch_id}")
            rows = conn.execute(sa.select(Job.status, Job.verdict).where(Job.batch_id == key)).all()
        return {"id": str(head.id), "tenant": head.tenant, "created_at": head.created_at,
                "items": head.items, "invalid": head.invalid, "jobs": len(rows),
                "by_status": dict(Counter(r.status for r in rows)),
                "by_verdict": dict(Counter(r.verdict for r in rows if r.verdict))}
