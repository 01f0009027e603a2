"""Live output through Redis Streams: one stream per job, resumable from any offset.

Entries: ``{t: "stdout"|"stderr", d: <bytes>}`` while the job runs, then one ``{t: "end",
d: <json summary>}``. Stream ids are the offsets: a reader passes the last id it saw and gets
exactly what follows. Streams are capped in length and expire a while after the job ends, after
which the stored result in PostgreSQL is the fallback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions

from airlock.errors import BrokerUnavailable

START = "0-0"


def output_key(job_id: str) -> str:
    return f"airlock:out:{job_id}"


def done_key(job_id: str) -> str:
    return f"airlock:done:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"airlock:cancel:{job_id}"


@dataclass(frozen=True, slots=True)
class Event:
    offset: str
    kind: str  # stdout, stderr, end
    data: bytes

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.data) if self.kind == "end" else {}


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=30)


class Publisher:
    """The worker's side. Never raises into the job's path: relay loss is logged, not fatal."""

    def __init__(self, r: redis.Redis, job_id: str, maxlen: int, ttl_s: int) -> None:
        self.r, self.key, self.maxlen, self.ttl = r, output_key(job_id), maxlen, ttl_s
        self.job_id = job_id
        self.failed = False
        self._expiry_set = False

    def chunk(self, stream: str, data: bytes) -> None:
        if self.failed:
            return
        try:
            self.r.xadd(self.key, {"t": stream, "d": data}, maxlen=self.maxlen, approximate=True)
            if not self._expiry_set:
                # If the worker dies, the stream still goes away in time.
                self.r.expire(self.key, self.ttl * 4)
                self._expiry_set = True
        except redis.exceptions.RedisError:
            self.failed = True

    def end(self, summary: dict[str, Any]) -> None:
        body = json.dumps(summary, default=str)
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.xadd(self.key, {"t": "end", "d": body}, maxlen=self.maxlen, approximate=True)
            pipe.expire(self.key, self.ttl)
            pipe.xadd(done_key(self.job_id), {"d": body}, maxlen=1)
            pipe.expire(done_key(self.job_id), self.ttl)
            pipe.execute()
        except redis.exceptions.RedisError:
            self.failed = True


def read(r: redis.Redis, job_id: str, offset: str = START, block_ms: int = 1000,
         count: int = 512) -> list[Event]:
    """Events after ``offset`` (waiting up to ``block_ms`` for the first one)."""
    try:
        reply = r.xread({output_key(job_id): offset}, count=count, block=block_ms)
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"Redis: {exc}") from exc
    events = []
    rows: Any = reply or []
    for _key, entries in rows:
        for entry_id, fields in entries:
            ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            kind = fields[b"t"].decode()
            events.append(Event(ident, kind, fields[b"d"]))
    return events


def follow(r: redis.Redis, job_id: str, offset: str = START,
           block_ms: int = 1000) -> Iterator[Event | None]:
    """Yield events until the end event; yields None on each idle wait (a chance to give up)."""
    while True:
        events = read(r, job_id, offset, block_ms)
        if not events:
            yield None
            continue
        for event in events:
            offset = event.offset
            yield event
            if event.kind == "end":
                return


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
