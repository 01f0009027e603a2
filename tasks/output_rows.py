"""The rows of outputs kept whole: ``job_blobs`` (zstd frames of stdout, stderr and collected
files) and ``job_files`` (each attempt's manifest of collected files). Every read is fenced by
the attempt whose result is the job's: an attempt's rows are seen only once its result is
written (tasks/outputs.py writes and reads through here, and the object store)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from base.ids import JobId
from tasks.blobs import Frame
from tasks.models import Blob, FileEntry, Job, Status
from tasks.store import Repository, connected


@dataclass(frozen=True, slots=True)
class StoredFrame:
    attempt: int
    seq: int
    raw_bytes: int
    data: bytes | None  # None: in the object store (tasks/objects.py)


@dataclass(frozen=True, slots=True)
class FileRow:
    """One entry of a job's manifest of collected files (tasks/models.py FileEntry)."""

    n: int
    path: str
    status: str
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None
    mode: int | None = None

    @property
    def blob(self) -> str:
        return f"file:{self.n}"


class OutputRows(Repository):
    def put_blobs(self, job_id: str, attempt: int, frames: Iterable[Frame], batch: int = 8,
                  commit_bytes: int = 32 * 1024 * 1024) -> None:
        """Store an attempt's frames (idempotent: a retried write adds nothing), committed
        every ``commit_bytes`` or so. They are read only once this attempt's result is the
        job's: a set cut short is never seen (and goes with the job's next result)."""
        key = uuid.UUID(job_id)
        stmt = pg_insert(Blob).on_conflict_do_nothing()
        rows: list[dict[str, Any]] = []
        pending = 0
        with connected(self.engine.connect) as conn:
            for f in frames:
                rows.append({"job_id": key, "attempt": attempt, "blob": f.blob, "seq": f.seq,
                             "raw_bytes": f.raw_bytes, "data": f.data})
                pending += len(f.data or b"")
                if len(rows) >= batch:  # a few MiB in memory at most
                    conn.execute(stmt, rows)
                    rows = []
                if pending >= commit_bytes:
                    conn.commit()
                    pending = 0
            if rows:
                conn.execute(stmt, rows)
            conn.commit()

    def drop_blobs(self, job_id: str, attempt: int, prefix: str) -> None:
        """An attempt's frames of the blobs named ``prefix...`` (files it could not keep)."""
        with self._statement() as conn:
            conn.execute(sa.delete(Blob).where(Blob.job_id == uuid.UUID(job_id),
                                               Blob.attempt == attempt,
                                               Blob.blob.startswith(prefix, autoescape=True)))

    def drop_attempts(self, job_id: str, attempt: int, *, others: bool) -> None:
        """Frames and manifests of the attempts but ``attempt`` (``others``: what earlier
        attempts stored and never made the job's, their worker dead), or of ``attempt`` alone
        (one whose result was fenced out: another attempt's is the job's)."""
        key = uuid.UUID(job_id)
        with self._tx() as conn:
            for table in (Blob, FileEntry):
                which = table.attempt != attempt if others else table.attempt == attempt
                conn.execute(sa.delete(table).where(table.job_id == key, which))

    def _current(self, key: uuid.UUID) -> Any:
        """The attempt whose result is the job's (none while it runs)."""
        return sa.select(Job.attempt).where(Job.id == key,
                                            Job.status == Status.FINISHED).scalar_subquery()

    def blob_sizes(self, job_id: JobId, blob: str) -> list[tuple[int, int]]:
        """(seq, raw size) of each frame of the job's ``blob`` from its result's attempt, in
        order; empty when it was not kept (or the job has not finished)."""
        key = uuid.UUID(job_id)
        query = (sa.select(Blob.seq, Blob.raw_bytes)
                 .where(Blob.job_id == key, Blob.blob == blob, Blob.attempt == self._current(key))
                 .order_by(Blob.seq))
        with self._statement() as conn:
            return [(r.seq, r.raw_bytes) for r in conn.execute(query)]

    def blob_frames(self, job_id: JobId, blob: str, first_seq: int = 0,
                    last_seq: int | None = None) -> Iterator[StoredFrame]:
        """The frames of the job's ``blob`` from ``first_seq`` to ``last_seq``, in order, from
        its result's attempt; none when it was not kept. A frame's data is None where it is in
        the object store. Streamed: a frame at a time in memory."""
        key = uuid.UUID(job_id)
        query = (sa.select(Blob.attempt, Blob.seq, Blob.raw_bytes, Blob.data)
                 .where(Blob.job_id == key, Blob.blob == blob, Blob.attempt == self._current(key),
                        Blob.seq >= first_seq)
                 .order_by(Blob.seq))
        if last_seq is not None:
            query = query.where(Blob.seq <= last_seq)
        with self._tx() as conn:  # a server-side cursor lives in a transaction
            result = conn.execution_options(stream_results=True, yield_per=4).execute(query)
            for row in result:
                yield StoredFrame(row.attempt, row.seq, row.raw_bytes, row.data)

    def put_files(self, job_id: str, attempt: int, rows: Iterable[FileRow]) -> None:
        """An attempt's manifest, in one transaction, after all its frames (idempotent)."""
        key = uuid.UUID(job_id)
        values = [{"job_id": key, "attempt": attempt, "n": r.n, "path": r.path,
                   "status": r.status, "reason": r.reason, "size": r.size, "sha256": r.sha256,
                   "mode": r.mode} for r in rows]
        if not values:
            return
        stmt = pg_insert(FileEntry).on_conflict_do_nothing()
        with self._tx() as conn:
            for at in range(0, len(values), 1000):
                conn.execute(stmt, values[at:at + 1000])

    def files_stored(self, job_id: str, attempt: int) -> bool:
        """Whether this attempt's manifest (and so every frame before it) is stored."""
        with self._statement() as conn:
            return conn.execute(sa.select(sa.exists().where(
                FileEntry.job_id == uuid.UUID(job_id), FileEntry.attempt == attempt))).scalar() is True

    def files(self, job_id: JobId) -> list[FileRow]:
        """The manifest of the job's result (empty while it runs, or when nothing was named)."""
        key = uuid.UUID(job_id)
        query = (sa.select(FileEntry.n, FileEntry.path, FileEntry.status, FileEntry.reason,
                           FileEntry.size, FileEntry.sha256, FileEntry.mode)
                 .where(FileEntry.job_id == key, FileEntry.attempt == self._current(key))
                 .order_by(FileEntry.n))
        with self._statement() as conn:
            rows = conn.execute(query).all()
        return [FileRow(*row) for row in rows]
