"""The worker's side of live output: a bounded hand-off from a job's read loop to one relay
thread per worker process, which writes to Redis in pipelined, coalesced XADDs.

The read loop never blocks on Redis. ``Publisher.chunk`` appends to a buffer bounded in bytes;
while the relay thread is busy, consecutive chunks of one stream merge into one entry (up to
``entry_bytes``). When the buffer is full, ``Publisher.hold`` tells the read loop to stop
reading for a moment: the job's pipe fills and its writes wait, so the live stream loses
nothing while Redis keeps up. Only when a write to Redis has been under way longer than
``STALL_S`` (Redis hung or far away) are chunks dropped instead, and later announced by one
``lagging`` entry that says how many bytes were skipped. So the worker's memory stays bounded
whatever the job prints and however slow Redis is, the job never waits on a stalled Redis, and
never on its readers (they read from Redis at their own pace).

Each entry carries ``p`` = "stdout,stderr": the byte positions in the job's two streams after
it, so a reader's cursor stays exact across skips, and across the stream's expiry (the stored
head in PostgreSQL is in the same coordinates).

Measured (docs/streaming.md): an XADD per chunk on the read loop cost ~230 µs per 16-28 KiB
chunk and halved the rate of a job printing 64 MiB; through this thread the job runs as fast
as with no relay at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import redis
import redis.exceptions
import structlog

from config.settings import Settings
from tasks import streams

log = structlog.get_logger(__name__)
OUTPUT = ("stdout", "stderr")
PutResult = Literal["added", "merged", "dropped"]
LINGER_S = 0.005  # how long output that follows a write closely waits to fill an entry
STREAMING_GAP_S = 0.005
RETRY_AFTER_S = 1.0  # after Redis refused a write, live output resumes this much later
STALL_S = 1.0  # a write to Redis under way this long: stop holding the job back, skip instead


@dataclass(slots=True, eq=False)
class Entry:
    """One future stream entry; ``stdout``/``stderr`` are the positions after it."""

    owner: Publisher
    kind: str  # stdout, stderr, lagging, truncated, end
    data: bytearray
    stdout: int
    stderr: int
    written: threading.Event | None = None  # set once the relay thread has tried to write it


class RelayBuffer:
    """A FIFO of entries bounded in bytes. ``put`` never blocks; ``take`` waits."""

    def __init__(self, max_bytes: int, entry_bytes: int) -> None:
        self.max_bytes, self.entry_bytes = max_bytes, entry_bytes
        self.buffered = 0
        self.high_water = 0
        self._items: deque[Entry] = deque()
        self._cond = threading.Condition()

    def put(self, *entries: Entry, force: bool = False) -> PutResult:
        """Queue all of ``entries`` or none (``dropped`` when they do not fit; ``force``
        ignores the bound, for the few small markers). A chunk merges into the last queued
        entry when that holds the same job's same stream and has room."""
        size = sum(len(e.data) for e in entries)
        output = sum(len(e.data) for e in entries if e.kind in OUTPUT)  # markers are tiny
        with self._cond:
            if not force and self.buffered + output > self.max_bytes:
                return "dropped"
            result: PutResult = "added"
            for entry in entries:
                last = self._items[-1] if self._items else None
                if (last is not None and last.owner is entry.owner and last.kind == entry.kind
                        and entry.kind in OUTPUT
                        and len(last.data) + len(entry.data) <= self.entry_bytes):
                    last.data += entry.data
                    last.stdout, last.stderr = entry.stdout, entry.stderr
                    result = "merged"
                else:
                    self._items.append(entry)
                    result = "added"
            self.buffered += size
            self.high_water = max(self.high_water, self.buffered)
            self._cond.notify()
            return result

    def full(self, headroom: int) -> bool:
        """Whether ``headroom`` more bytes of output would not fit."""
        return self.buffered + headroom > self.max_bytes

    def take(self, max_bytes: int, timeout: float | None = None, linger_s: float = 0.0,
             streaming: Callable[[], bool] = lambda: True) -> list[Entry]:
        """The oldest entries, at least one and about ``max_bytes`` at most ([] on timeout).
        With ``linger_s``, less than one entry's worth waits that long for more to merge, if
        ``streaming()`` says so once the first entry is there."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                return []
            until = time.monotonic() + (linger_s if linger_s > 0 and streaming() else 0.0)
            while self.buffered < self.entry_bytes and (left := until - time.monotonic()) > 0:
                self._cond.wait(left)
            out: list[Entry] = []
            size = 0
            while self._items and (not out or size + len(self._items[0].data) <= max_bytes):
                entry = self._items.popleft()
                size += len(entry.data)
                out.append(entry)
            self.buffered -= size
            return out

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass(eq=False)
class Publisher:
    """One job's live output. ``chunk`` is called from the job's read loop and returns at once.

    The live stream is a window: the relay thread trims it to its newest ``budget_bytes`` of
    output (and ``max_entries`` entries) as it writes, and to its end entry once the job has
    ended (PostgreSQL then holds the output whole). A reader that fell behind the window sees
    a gap in the entries' positions and reads the rest from PostgreSQL (``airlock.client``).
    """

    relay: Relay
    job_id: str
    budget_bytes: int
    max_entries: int
    key: str = ""
    positions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUT, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUT, 0))
    skipped_total: int = 0
    relayed: int = 0
    entries: int = 0
    # Redis refused a write (it is away: a failover, a restart): output is skipped until
    # ``retry_at`` (monotonic), then written again after a ``lagging`` entry saying how much.
    failed: bool = False
    retry_at: float = 0.0
    expiry_set: bool = False  # touched by the relay thread only
    # The entries in Redis, oldest first, as (id, bytes): the relay thread's alone.
    window: deque[tuple[str, int]] = field(default_factory=deque)
    window_bytes: int = 0

    def __post_init__(self) -> None:
        self.key = streams.output_key(self.job_id)

    def _entry(self, kind: str, data: bytes | memoryview, before: int = 0,
               stream: str = "stdout") -> Entry:
        pos = dict(self.positions)
        pos[stream] -= before
        return Entry(self, kind, bytearray(data), pos["stdout"], pos["stderr"])

    def chunk(self, stream: str, data: bytes | memoryview) -> None:
        """A chunk of the job's output, in entries of ``entry_bytes`` at most (a stream entry
        the size of the allocator's class, and a window trimmed in even steps)."""
        size = self.relay.buffer.entry_bytes
        view = memoryview(data)
        for start in range(0, len(view), size):
            self._piece(stream, view[start:start + size])

    def _piece(self, stream: str, data: memoryview) -> None:
        self.positions[stream] += len(data)
        if self.failed and time.monotonic() >= self.retry_at:
            self.failed = False  # try Redis again (a Sentinel client finds the new primary)
        if self.failed:
            self.skipped[stream] += len(data)
            self.skipped_total += len(data)
            return
        if not data:
            return
        entry = self._entry(stream, data)
        queued = (self._lagging(len(data), stream), entry) if self.skipped_total else (entry,)
        result = self.relay.buffer.put(*queued)
        if result == "dropped":
            self.skipped[stream] += len(data)
            self.skipped_total += len(data)
            return
        if len(queued) == 2:
            self.skipped = dict.fromkeys(OUTPUT, 0)
            self.entries += 1
        self.relayed += len(data)
        self.entries += result == "added"

    def make_room(self, incoming: list[int]) -> str | None:
        """(Relay thread) Before entries of these sizes go in: drop the oldest of the window
        until they fit its budget and entry count, and say from which id the stream keeps
        (``XADD … MINID``, so that Redis never holds more than the window, even for a moment);
        None when nothing has to go."""
        new_bytes, new_entries = sum(incoming), len(incoming)
        trim_to = None
        while self.window and (self.window_bytes + new_bytes > self.budget_bytes
                               or len(self.window) + new_entries > self.max_entries):
            gone_id, gone = self.window.popleft()
            self.window_bytes -= gone
            trim_to = self.window[0][0] if self.window else _after(gone_id)
        return trim_to

    def written(self, entry_id: str, size: int) -> None:
        """(Relay thread) An entry went into Redis."""
        self.window.append((entry_id, size))
        self.window_bytes += size

    def hold(self, headroom: int) -> bool:
        """Whether the read loop should wait before reading ``headroom`` more bytes: the
        buffer is full and the relay is draining it into Redis (its thread alive, its write
        not stalled, Redis not failed)."""
        return not self.failed and self.relay.buffer.full(headroom) and self.relay.draining()

    def _lagging(self, before: int = 0, stream: str = "stdout") -> Entry:
        body = json.dumps({f"skipped_{s}": n for s, n in self.skipped.items()})
        return self._entry("lagging", body.encode(), before, stream)

    def end(self, summary: dict[str, Any], timeout: float = 10.0) -> bool:
        """Queue the final entry (after any pending ``lagging`` one) and wait until it is
        written, so the end event is in Redis when the task returns. False if it was not."""
        if any(self.skipped.values()):
            self.relay.buffer.put(self._lagging(), force=True)
            self.skipped = dict.fromkeys(OUTPUT, 0)
        body = json.dumps(summary | {"stdout_bytes": self.positions["stdout"],
                                     "stderr_bytes": self.positions["stderr"],
                                     "live_skipped_bytes": self.skipped_total}, default=str)
        entry = self._entry("end", body.encode())
        entry.written = threading.Event()
        self.relay.buffer.put(entry, force=True)
        self.relay.ensure_started()
        return entry.written.wait(timeout) and not self.failed


def _after(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (``<ms>-<seq>``)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq) + 1}"


def _within(since: float, gap_s: float) -> bool:
    return time.monotonic() - since < gap_s


class Relay:
    """One per worker process: the buffer and the thread that drains it into Redis."""

    def __init__(self, r: redis.Redis, *, buffer_bytes: int, entry_bytes: int, max_entries: int,
                 budget_bytes: int, ttl_s: int) -> None:
        self.r = r
        self.buffer = RelayBuffer(buffer_bytes, entry_bytes)
        self.max_entries, self.budget_bytes, self.ttl = max_entries, budget_bytes, ttl_s
        self.batch_bytes = max(entry_bytes * 8, 1 << 20)
        self.written_entries = 0
        self.writing_since: float | None = None  # while the thread writes to Redis
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @classmethod
    def for_settings(cls, r: redis.Redis, s: Settings) -> Relay:
        return cls(r, buffer_bytes=s.streams.relay_buffer_bytes, entry_bytes=s.streams.relay_entry_bytes,
                   max_entries=s.streams.maxlen, budget_bytes=s.streams.max_bytes,
                   ttl_s=s.streams.ttl_s)

    def publisher(self, job_id: str) -> Publisher:
        self.ensure_started()
        return Publisher(self, job_id, self.budget_bytes, self.max_entries)

    def draining(self) -> bool:
        """Whether the thread runs and its write under way, if any, is younger than STALL_S.
        (A dead thread would never drain the buffer: holding then would stall the job.)"""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return False
        since = self.writing_since
        return since is None or time.monotonic() - since <= STALL_S

    def ensure_started(self) -> None:
        """Start the thread in this process (lazily: never before a fork, never at import)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="airlock-relay",
                                                daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        last_write = 0.0
        while not (self._stop.is_set() and not len(self.buffer)):
            # Output that arrives right after a write is a stream, not a line now and then: it
            # gathers into bigger entries for a moment (fewer XADDs, fewer events to read). A
            # print after a pause still goes out at once.
            entries = self.buffer.take(self.batch_bytes, timeout=0.5, linger_s=LINGER_S,
                                       streaming=partial(_within, last_write, STREAMING_GAP_S))
            if not entries:
                continue
            self.writing_since = time.monotonic()
            try:
                self._write(entries)
            except Exception as exc:  # never let the thread die; the entries are lost
                log.warning("relay.failed", error=str(exc))
            finally:
                self.writing_since = None
                last_write = time.monotonic()
                for entry in entries:
                    if entry.written is not None:
                        entry.written.set()

    def _write(self, entries: list[Entry]) -> None:
        pipe = self.r.pipeline(transaction=False)
        written: list[tuple[Entry, int]] = []  # each with its XADD's place in the replies
        incoming: dict[Publisher, list[int]] = {}
        for entry in entries:
            if entry.kind != "end" and not entry.owner.failed:
                incoming.setdefault(entry.owner, []).append(len(entry.data))
        room = {owner: owner.make_room(sizes) for owner, sizes in incoming.items()}
        for entry in entries:
            owner = entry.owner
            if owner.failed and entry.kind != "end":
                continue
            written.append((entry, len(pipe.command_stack)))
            # A view, not a copy: the entry left the buffer, nothing appends to it any more.
            fields = {"t": entry.kind, "d": memoryview(entry.data),
                      "p": f"{entry.stdout},{entry.stderr}"}
            trim_to = room.pop(owner, None)
            pipe.xadd(owner.key, fields, minid=trim_to, approximate=False)  # type: ignore[arg-type]
            if not owner.expiry_set:
                pipe.expire(owner.key, self.ttl * 4)  # if the worker dies, it still goes away
                owner.expiry_set = True
            if entry.kind == "end":
                streams.queue_end(pipe, owner.job_id, bytes(entry.data), self.ttl)
        if not written:
            return
        try:
            replies = pipe.execute()
            self.written_entries += len(written)
            self._ended([(entry, replies[place]) for entry, place in written])
        except redis.exceptions.RedisError as exc:
            for owner in {entry.owner for entry, _ in written}:
                if not owner.failed:
                    log.warning("relay.redis_failed", job_id=owner.job_id, error=str(exc),
                                retry_in_s=RETRY_AFTER_S)
                owner.failed, owner.retry_at = True, time.monotonic() + RETRY_AFTER_S

    def _ended(self, written: list[tuple[Entry, bytes | str]]) -> None:
        """Note what went in; an ended stream keeps its end entry alone (PostgreSQL has the
        output whole by then)."""
        ends: dict[Publisher, str] = {}
        for entry, raw in written:
            entry_id = raw.decode() if isinstance(raw, bytes) else raw
            if entry.kind == "end":
                ends[entry.owner] = entry_id
                entry.owner.window.clear()
                entry.owner.window_bytes = 0
            else:
                entry.owner.written(entry_id, len(entry.data))
        if ends:
            pipe = self.r.pipeline(transaction=False)
            for owner, end_id in ends.items():
                pipe.xtrim(owner.key, minid=end_id, approximate=False)
            pipe.execute()
