"""What the API does, as plain blocking functions a route runs in a thread: the same contract,
store, queue and streams as the direct client, each call scoped to the key's tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from airlock.api import sse
from airlock.api.auth import KeyRows, Principal
from airlock.api.bodies import parse_json
from airlock.api.problems import Problem
from airlock.batch import parse_lines
from airlock.client import Airlock, WaitTimeout
from airlock.records import JobRecord
from base.errors import JobSpecError, QuotaExceeded
from base.ids import JobId, parse_job_id
from config.settings import Settings
from tasks import streams
from tasks import usage as usage_days
from tasks.contract import resolve
from tasks.lookup import Filters, Lookup
from tasks.output_rows import FileRow
from tasks.store import JobRow
from tasks.tenancy import TenantStore

log = structlog.get_logger(__name__)
READ_STEP = 1024 * 1024  # a stored frame's bytes (tasks/blobs.py): one or two frames a step
NOT_SENT = ("recorded; Redis did not take its message: the fleet's reconciler sends it, so"
            " it may start a little later")


class Service:
    def __init__(self, s: Settings) -> None:
        self.settings = s
        # Its store, Redis and queue, shared by every request (a pool for the API's threads).
        self.direct = Airlock(s, db_pool=s.api.db_pool)
        self.lookup = Lookup(self.direct.store.engine)
        self.tenants = TenantStore(self.direct.store.engine)
        self.keys = KeyRows(self.tenants, s.api.key_cache_s)

    def close(self) -> None:
        self.direct.close()

    # --- one job ----------------------------------------------------------------------------

    def submit(self, who: Principal, raw: Any, header_key: str | None,
               wait_s: float | None = None, batch_id: str | None = None) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise JobSpecError("job", "a job is a JSON object")
        if header_key is not None:
            if raw.get("idempotency_key") not in (None, header_key):
                raise JobSpecError("idempotency_key", "differs from the Idempotency-Key header")
            raw = raw | {"idempotency_key": header_key}
        spec, job = resolve(raw, self.settings)
        done = self.direct.submitter.submit(spec, job, who.tenant, batch_id)
        row, created, enqueued = done.row, done.created, done.enqueued
        job_id = JobId(str(row.id))
        if not created and row.spec != spec.model_dump(mode="json", exclude_none=True):
            raise Problem(409, "conflict", "Idempotency key in use",
                          "this tenant's idempotency key names another job, with another spec")
        record = self._await(job_id, wait_s) if wait_s else JobRecord.from_row(row)
        out = record.to_json() | {"created": created, "enqueued": enqueued}
        return out | ({} if enqueued else {"note": NOT_SENT})

    def record(self, who: Principal, job_id: str, wait_s: float | None = None) -> JobRecord:
        if wait_s:
            return self._await(self._owned(who, job_id), wait_s)
        return JobRecord.from_row(self.lookup.job(parse_job_id(job_id), who.sees))

    def _await(self, job_id: JobId, wait_s: float | None) -> JobRecord:
        wait = min(wait_s or 0.0, self.settings.api.max_wait_s)
        try:
            return self.direct.wait(job_id, wait)
        except WaitTimeout:
            return self.direct.result(job_id)  # not finished in time: as it stands

    def _owned(self, who: Principal, job_id: str) -> JobId:
        """The id, if the key's tenant may see it (else 404, as for no such job)."""
        known = parse_job_id(job_id)
        self.lookup.job(known, who.sees)
        return known

    def cancel(self, who: Principal, job_id: str) -> str:
        return self.direct.cancel(self._owned(who, job_id))

    def output(self, who: Principal, job_id: str, stream: str, start: int) -> Iterator[bytes]:
        known = self._owned(who, job_id)
        if not self.direct.result(known).done:
            raise Problem(409, "not-finished", "Not finished",
                          "the whole output is kept once the job has ended; follow its events")
        return self.direct.output(known, stream, start)

    def manifest(self, who: Principal, job_id: str) -> dict[str, Any]:
        record = self.record(who, job_id)
        rows = self.direct.outputs.files(JobId(record.id))
        return {"job": record.id, "status": record.status, "summary": record.files,
                "files": [asdict(r) for r in rows]}

    def file(self, who: Principal, job_id: str, name: str) -> FileRow:
        """The collected file called ``name`` (404 for another tenant's job, as for none)."""
        return self.direct.file(self._owned(who, job_id), name)

    def read_file(self, job_id: str, row: FileRow, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the file ``file`` gave, READ_STEP at a time, each step read
        whole by a query of its own: a slow reader never holds a database connection."""
        for at in range(start, end, READ_STEP):
            yield b"".join(self.direct.read_file(job_id, row, at, min(end, at + READ_STEP)))

    def events(self, who: Principal, job_id: str, last_event_id: str | None) -> Iterator[str]:
        known = self._owned(who, job_id)
        cursor = streams.Cursor.parse(last_event_id or streams.START)  # a forged one: 400
        return self._frames(known, str(cursor))

    def _frames(self, job_id: JobId, offset: str) -> Iterator[str]:
        for event in self.direct.events(job_id, offset, heartbeat_s=self.settings.api.keepalive_s):
            yield sse.KEEPALIVE if event.kind == "ping" else sse.frame(event)

    # --- many jobs --------------------------------------------------------------------------

    def page(self, who: Principal, filters: Filters, cursor: str | None,
             limit: int) -> dict[str, Any]:
        rows, after = self.lookup.page(who.sees, filters, cursor, limit)
        return {"jobs": [summary(r) for r in rows], "next_cursor": after}

    def batch(self, who: Principal, kind: str, body: bytes, header_key: str | None) -> dict[str, Any]:
        """Lines of jobs (a JSON array, or JSON Lines), each valid one submitted, each invalid
        one said; with an Idempotency-Key the same batch again submits nothing twice."""
        scope = f"{who.tenant}:{header_key or uuid.uuid4()}"
        items = parse_lines(_as_lines(kind, body), scope, self.settings)
        batch_id = self.lookup.new_batch(who.tenant, len(items), sum(not i.valid for i in items),
                                         header_key)
        lines: list[dict[str, Any]] = []
        submitted = 0
        for item in items:
            if item.spec is None:
                lines.append({"line": item.number, "error": item.error})
                continue
            try:
                done = self.submit(who, item.spec, None, batch_id=batch_id)
            except QuotaExceeded as exc:  # this line refused, nothing stored; the rest go on
                lines.append({"line": item.number, "error": f"quota: {exc}"})
                continue
            submitted += 1
            lines.append({"line": item.number, "id": done["id"], "created": done["created"]})
        return {"batch": batch_id, "items": len(items), "submitted": submitted,
                "invalid": len(items) - submitted, "lines": lines}

    def batch_progress(self, who: Principal, batch_id: str) -> dict[str, Any]:
        return self.lookup.batch(batch_id, who.sees)

    def usage(self, who: Principal, since: date | None, until: date | None,
              tenant: str | None) -> dict[str, Any]:
        if tenant is not None and who.sees not in (None, tenant):
            raise Problem(403, "forbidden", "Forbidden", "only an admin key reads another"
                          " tenant's usage")
        first = since or datetime.now(UTC).date() - timedelta(days=30)
        found = usage_days.usage(self.direct.store.engine, tenant=tenant or who.sees, since=first,
                            until=until)
        return {"usage": [u.to_json() for u in found]}

    # --- health -----------------------------------------------------------------------------

    def ready(self) -> dict[str, str]:
        """Each service's answer ("ok", or what went wrong, never a secret)."""
        checks = {}
        try:
            with self.direct.store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            checks["postgresql"] = "ok"
        except Exception as exc:
            checks["postgresql"] = f"unavailable: {type(exc).__name__}"
        try:
            self.direct.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        return checks


def summary(row: JobRow) -> dict[str, Any]:
    return {"id": str(row.id), "tenant": row.tenant, "status": row.status,
            "verdict": row.verdict, "exit_code": row.exit_code, "label": row.label,
            "profile": row.profile, "wall_ms": row.wall_ms, "queued_at": row.queued_at,
            "started_at": row.started_at, "finished_at": row.finished_at}


def _as_lines(kind: str, body: bytes) -> bytes:
    """A JSON array as JSON Lines (one job per line), or JSON Lines as they are."""
    if kind != "application/json":
        return body
    jobs = parse_json(body)
    if not isinstance(jobs, list):
        raise Problem(400, "malformed", "Malformed body", "a batch is a JSON array of jobs")
    return b"\n".join(json.dumps(job).encode() for job in jobs)

