"""The client API a backend uses: submit, result, wait, cancel, and live events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import redis
import structlog

from airlock import downloads
from airlock.downloads import Saved
from airlock.records import JobRecord
from base.errors import AirlockError, BrokerUnavailable, NoSuchFile
from base.ids import JobId, parse_job_id
from config.settings import Settings, load_settings
from tasks import streams
from tasks.contract import JobSpec, resolve
from tasks.output_rows import FileRow
from tasks.outputs import Outputs
from tasks.queue import JobQueue
from tasks.store import JobStore, make_engine
from tasks.streams import Event
from tasks.submission import Submitter

log = structlog.get_logger(__name__)


class WaitTimeout(AirlockError):
    """The job did not finish in time (it goes on running)."""


@dataclass(frozen=True)
class JobHandle:
    id: str
    created: bool
    client: Airlock
    # When this client recorded and enqueued the job (monotonic), or 0 when it did not.
    submitted_at: float = field(default=0.0, compare=False)

    def result(self) -> JobRecord:
        return self.client.result(self.id)

    def wait(self, timeout: float | None = None) -> JobRecord:
        # A job this client just queued has not ended yet, or its end is still announced in
        # Redis (kept stream_ttl_s after the end): no need to read its row before waiting.
        fresh = (self.submitted_at > 0  # only set when this client created the job
                 and time.monotonic() - self.submitted_at < self.client.settings.streams.ttl_s)
        return self.client.wait(self.id, timeout, just_queued=fresh)

    def events(self, offset: str = streams.START) -> Iterator[Event]:
        return self.client.events(self.id, offset)

    def cancel(self) -> str:
        return self.client.cancel(self.id)


class Airlock:
    """Talks to PostgreSQL (the truth), Redis (the queue and live output) and nothing else:
    the direct mode, for code inside the fleet. With ``url`` (and ``api_key``) it is the HTTP
    API's client instead (airlock/http_client.py), with the same methods and records."""

    # The class that speaks HTTP: airlock/http_client.py names itself here when imported
    # (airlock/__init__.py imports it), so this module does not import its own subclass.
    over_http: ClassVar[type[Airlock] | None] = None

    def __new__(cls, settings: Settings | None = None, *, url: str | None = None,
                **_: Any) -> Airlock:
        if url is not None and cls is Airlock:
            if Airlock.over_http is None:
                raise AirlockError("the HTTP client is not loaded (import airlock.http_client)")
            return super().__new__(Airlock.over_http)
        return super().__new__(cls)

    def __init__(self, settings: Settings | None = None, *, tenant: str | None = None,
                 url: str | None = None, api_key: str | None = None,
                 db_pool: int | None = None) -> None:
        self.settings = settings or load_settings()
        self.tenant = tenant or self.settings.default_tenant
        pool = {} if db_pool is None else {"pool": db_pool, "overflow": db_pool}
        self.store = JobStore(make_engine(self.settings.database_url, **pool))
        self.outputs = Outputs.for_settings(self.store.engine, self.settings)
        self.redis = streams.connect(self.settings.redis_url, self.settings.sentinel_master)
        self.queue = JobQueue(self.settings)
        self.submitter = Submitter(self.store, self.queue, self.settings)

    def submit(self, job: JobSpec | dict[str, Any] | None = None, **fields: Any) -> JobHandle:
        """Validate (raising JobSpecError naming the field), record within the tenant's
        quotas (else QuotaExceeded, nothing stored), then admit it when its turn comes."""
        spec, resolved = resolve(job if job is not None else fields, self.settings)
        done = self.submitter.submit(spec, resolved, self.tenant)
        job_id = JobId(str(done.row.id))
        return JobHandle(job_id, done.created, self, time.monotonic() if done.created else 0.0)

    def enqueue(self, job_id: str, description: str = "") -> None:
        """Send the job's message (only an admitted job can be claimed: another is dropped by
        the worker). A failure loses nothing: the workers' reconciler sends it again."""
        self.queue.enqueue(job_id, description)

    def resend(self, job_id: str) -> None:
        """A job thought lost: admit what is due, and send its message again if it was
        admitted (a duplicate is harmless: the claim is a compare-and-set)."""
        self.submitter.admit()
        if self.store.get(parse_job_id(job_id)).admitted_at is not None:
            self.enqueue(job_id, "resend")

    def finished_among(self, job_ids: list[str], wait_s: float) -> list[str]:
        """Ids among ``job_ids`` that have finished, waiting up to ``wait_s`` for one (woken by
        the workers' "done" announcements; PostgreSQL stays the truth)."""
        done = [j for j, st in self.store.states(job_ids).items() if st[0] == "finished"]
        if done:
            return done
        try:
            self.redis.xread({streams.done_key(j): streams.START for j in job_ids},
                             count=1, block=max(1, int(wait_s * 1000)))
        except redis.exceptions.RedisError:
            time.sleep(wait_s)
        done = [j for j, st in self.store.states(job_ids).items() if st[0] == "finished"]
        if not done:
            time.sleep(0.05)  # a done key left from an earlier life must not spin us
        return done

    def result(self, job_id: str) -> JobRecord:
        return JobRecord.from_row(self.store.get(parse_job_id(job_id)))

    def wait(self, job_id: str, timeout: float | None = None, *,
             just_queued: bool = False) -> JobRecord:
        """The job's record once it has ended. ``just_queued``: the caller knows the job was
        queued moments ago, so the first read of its row is skipped (its end, if it came,
        is announced in Redis; the row is read once that announcement arrives)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        status = "queued"
        while True:
            if not just_queued:
                record = self.result(job_id)
                if record.done:
                    return record
                status = record.status
            left = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
            if left <= 0:
                if not just_queued:
                    raise WaitTimeout(f"job {job_id} is still {status} after {timeout}s")
                just_queued = False
                continue  # out of time before the first look: look once, then give up
            just_queued = False
            try:
                streams.wait_done(self.redis, job_id, left)
            except BrokerUnavailable:
                time.sleep(min(left, 0.5))  # Redis away: PostgreSQL alone still answers

    def cancel(self, job_id: str) -> str:
        """'cancelled' (it never started), 'cancelling' (killed within a second), or
        'already_finished' (nothing to do)."""
        state = self.store.request_cancel(parse_job_id(job_id))
        if state == "cancelling":
            try:
                self.redis.set(streams.cancel_key(job_id), 1, ex=self.settings.streams.ttl_s)
            except redis.exceptions.RedisError:
                pass  # the worker also sees the flag when it renews its lease
        elif state == "cancelled":  # no worker will ever end its stream: readers and waiters
            streams.publish_end(self.redis, job_id, end_summary(self.result(job_id)),
                                self.settings.streams.ttl_s)
        return state

    def output(self, job_id: str, stream: str, start: int = 0) -> Iterator[bytes]:
        """A finished job's ``stream`` (stdout or stderr) whole, up to its output cap, from
        byte ``start``: the row's head when that was all of it, else the frames PostgreSQL
        keeps (tasks/blobs.py), a frame at a time."""
        if stream not in ("stdout", "stderr"):
            raise AirlockError(f"no output stream {stream!r}: stdout or stderr")
        known = parse_job_id(job_id)
        record = self.result(known)
        if not self.outputs.kept(known, stream):
            head = (record.stdout_bytes if stream == "stdout" else record.stderr_bytes)[start:]
            if head:
                yield head
            return
        yield from self.outputs.read(known, stream, start)

    def files(self, job_id: str) -> list[FileRow]:
        """The manifest of a finished job's collected files: each taken (its size, sha256,
        mode) or refused (why), in the order found; empty while the job runs. A path is
        relative to /workspace, as printable text (base/names.py)."""
        return self.outputs.files(self._known(job_id))

    def file(self, job_id: str, name: str) -> FileRow:
        """The collected file called ``name`` (a manifest entry's path), or NoSuchFile."""
        for row in self.files(job_id):
            if row.path == name and row.status == "collected":
                return row
        raise NoSuchFile(f"job {job_id} kept no file {name!r}")

    def download(self, job_id: str, name: str, start: int = 0,
                 end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) of the collected file ``name``, a frame at a time (a ranged
        read fetches only the frames that hold the range)."""
        yield from self.read_file(job_id, self.file(job_id, name), start, end)

    def read_file(self, job_id: str, row: FileRow, start: int = 0,
                  end: int | None = None) -> Iterator[bytes]:
        """A manifest entry's bytes [start, end) (its size and sha256 are in ``row``)."""
        if start < 0 or (end is not None and end < start):
            raise AirlockError(f"bad range {start}-{end}")
        yield from self.outputs.read(parse_job_id(job_id), row.blob, start, end)

    def save_files(self, job_id: str, folder: Path) -> list[Saved]:
        """Every collected file of the job, written below ``folder`` and never outside it
        (airlock/downloads.py), each checked against its sha256."""
        return downloads.save(folder, self.files(job_id), lambda row: self.read_file(job_id, row))

    def events(self, job_id: str, offset: str = streams.START, follow: bool = True,
               heartbeat_s: float | None = None) -> Iterator[Event]:
        """Output events after ``offset`` (a previous event's ``offset``; default: from the
        start). With ``follow``, until the ``end`` event that carries the verdict; without,
        what is there now. The live stream is a window (tasks/relay.py): a reader it left
        behind gets a ``lagging`` event for what it missed while the job runs, and the rest
        from PostgreSQL, from the same byte positions, once the job has ended (as when the
        stream has expired, or the relay lost it). With ``heartbeat_s``, a ``ping`` event when
        nothing else came for that long (a proxy between keeps the connection)."""
        cursor = streams.Cursor.parse(offset)
        job_id = self._known(job_id)
        idle, check = 0, True
        quiet_since = time.monotonic()
        while cursor.entry != streams.STORED:
            try:
                if check and not streams.stream_exists(self.redis, job_id) and (
                        not follow or self.result(job_id).done):
                    break  # expired (or never written): the stored result answers
                batch = streams.read(self.redis, job_id, cursor,
                                     block_ms=1000 if follow else None)
            except BrokerUnavailable:
                # Redis away (a Sentinel failover, a restart): a follower waits and resumes
                # from its cursor; once the job has ended the stored result answers.
                if not follow:
                    raise
                if self.result(job_id).done:
                    break
                time.sleep(0.5)
                continue
            for event in batch:
                missed = streams.missed(cursor, event)
                if missed and self.result(job_id).done:
                    break  # the window moved on: the stored result answers from the cursor
                if missed:
                    yield streams.lagging(cursor, missed)
                cursor = event.cursor
                yield event
                if event.kind == "end":
                    return
            else:
                check = not batch
                if batch:
                    idle, quiet_since = 0, time.monotonic()
                    continue
                if not follow:
                    return
                if heartbeat_s is not None and time.monotonic() - quiet_since >= heartbeat_s:
                    quiet_since = time.monotonic()
                    yield Event(str(cursor), "ping", b"")
                idle += 1
                if idle >= 3 and self.result(job_id).done:
                    break  # finished, but its stream will not end by itself (the relay lost it)
                continue
            break
        yield from self._replay(job_id, cursor)

    def _replay(self, job_id: str, cursor: streams.Cursor) -> Iterator[Event]:
        """The stored result as events, from the cursor's byte positions on (the output whole:
        the row's head, or the frames PostgreSQL keeps beyond it)."""
        record = self.result(job_id)
        out, err = cursor.stdout, cursor.stderr
        for rest in (self.output(job_id, "stdout", out) if record.done else ()):
            out += len(rest)
            yield Event(str(streams.Cursor(streams.STORED, out, err)), "stdout", rest)
        for rest in (self.output(job_id, "stderr", err) if record.done else ()):
            err += len(rest)
            yield Event(str(streams.Cursor(streams.STORED, out, err)), "stderr", rest)
        if record.done:
            yield _end_event(record, streams.Cursor(streams.STORED, out, err))

    def _known(self, job_id: str) -> JobId:
        """The id, once PostgreSQL has the job (else JobNotFound, as for a malformed id)."""
        known = parse_job_id(job_id)
        self.store.get(known)
        return known

    def close(self) -> None:
        self.store.engine.dispose()
        self.redis.close()


def end_summary(record: JobRecord) -> dict[str, Any]:
    return {"verdict": record.verdict, "exit_code": record.exit_code, "attempt": record.attempt,
            "stdout_bytes": record.stdout_total or 0, "stderr_bytes": record.stderr_total or 0,
            "error": record.error, "stored": True}


def _end_event(record: JobRecord, cursor: streams.Cursor) -> Event:
    return Event(str(cursor), "end", json.dumps(end_summary(record)).encode())
