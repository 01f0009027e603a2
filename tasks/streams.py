"""Live output through Redis Streams: one stream per job, resumable from any offset.

Entries: ``{t: "stdout"|"stderr", d: <bytes>, p: "<stdout pos>,<stderr pos>"}`` while the job
runs (``p``: the byte positions in each stream after the entry), maybe ``lagging`` (the relay fell
behind and skipped bytes, ``d`` says how many) or ``truncated`` (the live stream reached its
bound; the job goes on), then one ``end`` whose ``d`` is the JSON summary with the verdict.

A reader's offset is a ``Cursor``: the last entry id it saw plus the two positions, written
``<id>:<stdout>:<stderr>``. With the id a reader resumes exactly after what it saw; with the
positions it resumes exactly in the stored result (PostgreSQL) once the stream has expired.
The worker writes through ``tasks.relay`` (bounded, off the job's read loop).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.exceptions
from redis.sentinel import Sentinel

from base.errors import AirlockError, BrokerUnavailable

START = "0-0"
STORED = "stored"  # the entry id of events replayed from PostgreSQL
READ_COUNT = 64  # entries per XREAD (each holds at most relay_entry_bytes)
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def output_key(job_id: str) -> str:
    return f"airlock:out:{job_id}"


def done_key(job_id: str) -> str:
    return f"airlock:done:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"airlock:cancel:{job_id}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a reader is: after stream entry ``entry``, having seen ``stdout``/``stderr`` bytes."""

    entry: str = START
    stdout: int = 0
    stderr: int = 0

    @classmethod
    def parse(cls, text: str | Cursor) -> Cursor:
        if isinstance(text, Cursor):
            return text
        parts = text.strip().split(":")
        try:
            if len(parts) not in (1, 3) or not (_ENTRY_ID.match(parts[0]) or parts[0] == STORED):
                raise ValueError(text)
            out, err = (int(parts[1]), int(parts[2])) if len(parts) == 3 else (0, 0)
            if out < 0 or err < 0:
                raise ValueError(text)
        except ValueError:
            raise AirlockError(f"offset {text!r} is not a stream offset (<id>:<stdout>:<stderr>,"
                               " as events and `airlock logs` give them)") from None
        return cls(parts[0], out, err)

    def __str__(self) -> str:
        return f"{self.entry}:{self.stdout}:{self.stderr}"


@dataclass(frozen=True, slots=True)
class Event:
    offset: str  # a Cursor as text: pass it back to resume right after this event
    kind: str  # stdout, stderr, lagging, truncated, end
    data: bytes

    @property
    def summary(self) -> dict[str, Any]:
        """The JSON body of end, lagging and truncated events."""
        return json.loads(self.data) if self.kind not in ("stdout", "stderr") else {}

    @property
    def cursor(self) -> Cursor:
        return Cursor.parse(self.offset)


def missed(cursor: Cursor, event: Event) -> dict[str, int]:
    """Pure: the bytes of each stream between where the reader is and where ``event`` starts
    (the window was trimmed past them); empty when it follows on. A ``lagging`` event starts
    before the bytes the relay itself skipped (it says how many)."""
    after = event.cursor
    before = {"stdout": after.stdout, "stderr": after.stderr}
    if event.kind in ("stdout", "stderr"):
        before[event.kind] -= len(event.data)
    elif event.kind == "lagging":
        for stream, n in event.summary.items():
            before[stream.removeprefix("skipped_")] -= int(n)
    seen = {"stdout": cursor.stdout, "stderr": cursor.stderr}
    return {f"skipped_{s}": before[s] - seen[s] for s in seen if before[s] > seen[s]}


def lagging(cursor: Cursor, missed_bytes: dict[str, int]) -> Event:
    """An event saying what a reader missed, at its own cursor: the positions it has seen
    plus what it missed, so the next event follows on."""
    out = cursor.stdout + missed_bytes.get("skipped_stdout", 0)
    err = cursor.stderr + missed_bytes.get("skipped_stderr", 0)
    return Event(str(Cursor(cursor.entry, out, err)), "lagging",
                 json.dumps(missed_bytes).encode())


@dataclass(frozen=True, slots=True)
class Sentinels:
    """A sentinel:// URL, kombu's form: ``sentinel://[:PASSWORD@]HOST:PORT[/DB]``, several
    joined by ``;``. The password is Redis's (the Sentinels are asked with it too)."""

    hosts: tuple[tuple[str, int], ...]
    password: str | None
    username: str | None
    db: int


def sentinels(url: str) -> Sentinels:
    """Pure: the Sentinels of a sentinel:// URL (ValueError for anything else)."""
    hosts, password, username, db = [], None, None, 0
    for part in (p.strip() for p in url.split(";") if p.strip()):
        parsed = urlsplit(part)
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ValueError(f"not a sentinel:// URL: {part.split('@')[-1]!r}")
        hosts.append((parsed.hostname, parsed.port or 26379))
        password = password or (unquote(parsed.password) if parsed.password else None)
        username = username or (unquote(parsed.username) if parsed.username else None)
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
    return Sentinels(tuple(hosts), password, username, db)


def connect(url: str, sentinel_master: str = "airlock") -> redis.Redis:
    """A client of the Redis at ``url``; for a sentinel:// URL, of the primary named
    ``sentinel_master`` (AIRLOCK_SENTINEL_MASTER), found again through the Sentinels after a
    failover (each command after a lost connection asks them)."""
    options: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 5,
                               "health_check_interval": 30}
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url, **options)
    found = sentinels(url)
    auth: dict[str, Any] = {"password": found.password} if found.password else {}
    pool = Sentinel(list(found.hosts), sentinel_kwargs={"socket_timeout": 2,
                                                        "socket_connect_timeout": 2, **auth})
    options |= auth | {"db": found.db, "username": found.username}
    client: redis.Redis = pool.master_for(sentinel_master, **options)
    return client


def queue_end(pipe: Any, job_id: str, body: bytes, ttl_s: int) -> None:
    """Add to ``pipe``: the stream's expiry after the end, and the ``done`` announcement."""
    pipe.expire(output_key(job_id), ttl_s)
    pipe.xadd(done_key(job_id), {"d": body}, maxlen=1)
    pipe.expire(done_key(job_id), ttl_s)


def publish_end(r: redis.Redis, job_id: str, summary: dict[str, Any], ttl_s: int) -> None:
    """End a stream from outside a worker (a job cancelled before it started)."""
    body = json.dumps(summary, default=str).encode()
    try:
        pipe = r.pipeline(transaction=False)
        pipe.xadd(output_key(job_id), {"t": "end", "d": body, "p": "0,0"})
        queue_end(pipe, job_id, body, ttl_s)
        pipe.execute()
    except redis.exceptions.RedisError:
        pass  # readers and waiters fall back to PostgreSQL


def read(r: redis.Redis, job_id: str, offset: str | Cursor = START, block_ms: int | None = 1000,
         count: int = READ_COUNT) -> list[Event]:
    """Events after ``offset``: waiting up to ``block_ms`` for the first one (None: no wait)."""
    cursor = Cursor.parse(offset)
    if block_ms is not None:
        block_ms = max(1, block_ms)  # BLOCK 0 would wait forever
    try:
        reply = r.xread({output_key(job_id): cursor.entry}, count=count, block=block_ms)
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"Redis: {exc}") from exc
    events = []
    rows: Any = reply or []
    for _key, entries in rows:
        for entry_id, fields in entries:
            ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            kind = fields[b"t"].decode()
            out, _, err = fields.get(b"p", b"").decode().partition(",")
            if out and err:
                cursor = Cursor(ident, int(out), int(err))
            else:
                cursor = Cursor(ident, cursor.stdout, cursor.stderr)
            events.append(Event(str(cursor), kind, fields[b"d"]))
    return events


def wait_done(r: redis.Redis, job_id: str, timeout_s: float) -> bool:
    """Block until the worker announces the job's end (or the timeout passes)."""
    try:
        reply = r.xread({done_key(job_id): START}, count=1, block=max(1, int(timeout_s * 1000)))
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"Redis: {exc}") from exc
    return bool(reply)


def stream_exists(r: redis.Redis, job_id: str) -> bool:
    try:
        return bool(r.exists(output_key(job_id)))
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"Redis: {exc}") from exc
