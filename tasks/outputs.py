"""Outputs kept whole, written and read: stdout and stderr past the row's head, and the
collected files (``file:<n>``). Frames are in PostgreSQL (job_blobs), or in the object store
when one is set (tasks/objects.py) with PostgreSQL's rows as their index; either way an
attempt's frames and manifest are seen only once its result is the job's.

Writing: frames first (committed as they go), the manifest after them, then the result
(tasks/results.py); a retry writes again what is missing (idempotent). Reading: any byte
range, fetching only the frames that hold it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import replace

from sqlalchemy.engine import Engine

from base.ids import JobId
from config.settings import Settings
from tasks import blobs, objects
from tasks.blobs import Frame
from tasks.objects import ObjectStore
from tasks.output_rows import FileRow, OutputRows
from workers.collecting import Collection, Status
from workers.spool import Spool


class Outputs:
    def __init__(self, engine: Engine, store_objects: ObjectStore | None = None,
                 prefix: str = "") -> None:
        self.rows = OutputRows(engine)
        self.objects = store_objects
        self.prefix = prefix

    @classmethod
    def for_settings(cls, engine: Engine, s: Settings) -> Outputs:
        return cls(engine, objects.objects_for(s.objects), s.objects.prefix)

    # --- writing (the worker) -----------------------------------------------------------

    def put(self, job_id: str, attempt: int, frames: Iterable[Frame]) -> None:
        self.rows.put_blobs(job_id, attempt, self._placed(job_id, attempt, frames))

    def _placed(self, job_id: str, attempt: int, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Each frame's data into the object store, its row without it; or as it is."""
        for f in frames:
            if self.objects is None or f.data is None:
                yield f
                continue
            self.objects.put(objects.key(self.prefix, job_id, attempt, f.blob, f.seq), f.data)
            yield replace(f, data=None)

    def put_files(self, job_id: str, attempt: int, files: Collection, spool: Spool) -> None:
        """The collected files' frames, then their manifest; nothing when this attempt's
        manifest is stored already (a retried write)."""
        if self.rows.files_stored(job_id, attempt):
            return
        rows = manifest(files)
        frames = itertools.chain.from_iterable(
            blobs.frames(row.blob, spool.file_chunks(entry.offset, entry.size or 0))
            for row, entry in zip(rows, files.entries, strict=True)
            if entry.status is Status.COLLECTED)
        self.put(job_id, attempt, frames)
        self.rows.put_files(job_id, attempt, rows)

    def drop_other_attempts(self, job_id: str, attempt: int) -> None:
        """What attempts but this one stored (fenced out: never seen), once its result is in."""
        self._drop(job_id, attempt, others=True)

    def drop_attempt(self, job_id: str, attempt: int) -> None:
        """What this attempt stored, once another attempt's result is the job's."""
        self._drop(job_id, attempt, others=False)

    def _drop(self, job_id: str, attempt: int, *, others: bool) -> None:
        self.rows.drop_attempts(job_id, attempt, others=others)
        if self.objects is not None:
            self.objects.delete_where(
                objects.job_prefix(self.prefix, job_id),
                lambda k: (objects.attempt_of(k, self.prefix) != attempt) == others)

    def drop_files(self, job_id: str, attempt: int) -> None:
        """An attempt's frames of collected files (it could not keep them all)."""
        self.rows.drop_blobs(job_id, attempt, "file:")

    def forget(self, job_ids: Iterable[str]) -> None:
        """Every object of these jobs (retention, before their rows go)."""
        if self.objects is not None:
            for job_id in job_ids:
                self.objects.delete_where(objects.job_prefix(self.prefix, job_id), lambda k: True)

    # --- reading (the client) -----------------------------------------------------------

    def files(self, job_id: JobId) -> list[FileRow]:
        """The manifest of the job's result (empty while it runs, or when nothing was named)."""
        return self.rows.files(job_id)

    def kept(self, job_id: JobId, blob: str) -> bool:
        return bool(self.rows.blob_sizes(job_id, blob))

    def read(self, job_id: JobId, blob: str, start: int = 0,
             end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of the job's ``blob``, a frame at a time; only the frames that
        hold them are fetched and inflated."""
        span = blobs.window(self.rows.blob_sizes(job_id, blob), start, end)
        if span is None:
            return
        first, last, offset = span
        chunks = (blobs.inflate(self._data(job_id, blob, f.attempt, f.seq, f.data), f.raw_bytes)
                  for f in self.rows.blob_frames(job_id, blob, first, last))
        yield from blobs.cut(chunks, offset, start, end)

    def _data(self, job_id: str, blob: str, attempt: int, seq: int, data: bytes | None) -> bytes:
        if data is not None:
            return data
        if self.objects is None:
            from base.errors import ObjectStoreUnavailable

            raise ObjectStoreUnavailable("a frame is in the object store, and none is set"
                                         " (AIRLOCK_S3_URL)")
        return self.objects.get(objects.key(self.prefix, job_id, attempt, blob, seq))


def manifest(files: Collection) -> list[FileRow]:
    """The manifest's rows: each entry numbered in the order found (its blob ``file:<n>``)."""
    return [FileRow(n, e.text, str(e.status), e.reason, e.size, e.sha256, e.mode)
            for n, e in enumerate(files.entries)]
