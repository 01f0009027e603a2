"""Watching one job while it runs: its stdin fed, its output relayed and capped, its wall
timeout and cancellation enforced, its cgroup counters sampled, and the launcher's word on how
it ended taken from the status pipe, where the job cannot write.

The launcher writes that word as the job's main process ends, then waits (a second at most)
until the worker has read it before it kills what is left and exits: the worker samples the
container's cgroup (its OOM count, its refused forks) at that moment, while it still exists.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from workers import cgroup
from workers.capper import OutputCapper
from workers.launcher import LauncherStatus, parse_status
from workers.pipes import PIPE_BYTES, Pipes, read_status
from workers.spool import Spool

log = structlog.get_logger(__name__)

Sink = Callable[[str, bytes | memoryview], None]
Hold = Callable[[int], bool]  # "wait before reading this many more bytes of output"
DRAIN_AFTER_KILL_S = 3.0
TICK_S = 0.1
PIDS_POLL_S = 0.25
READ_BYTES = PIPE_BYTES
WRITE_BYTES = 65536
HOLD_TICK_S = 0.002  # while held, how often to look again


@dataclass
class Seen:
    """What watching the job found, before the engine is asked anything."""

    said: LauncherStatus | None = None
    timed_out: bool = False
    cancelled: bool = False
    drained: bool = True  # both outputs reached EOF (not given up after a kill)
    pids_events: int = 0
    oom_events: int = 0
    wall_ms: int = 0


class Watch:
    """One job's read/write loop over its FIFOs (``run``), then ``seen``."""

    def __init__(self, io: Pipes, payload: bytes, capper: OutputCapper, *, timeout_s: float,
                 cgroup_parent: str, container_id: str, kill: Callable[[], None],
                 sink: Sink | None = None, hold: Hold | None = None,
                 cancel: threading.Event | None = None, spool: Spool | None = None) -> None:
        self.io, self.capper, self.sink, self.hold, self.cancel = io, capper, sink, hold, cancel
        self.spool = spool
        self.parent, self.cid, self._kill = cgroup_parent, container_id, kill
        self.names = {io.out: "stdout", io.err: "stderr"}
        self.reading = set(self.names)  # both reach EOF when the container ends
        self.view, self.sent = memoryview(payload), 0
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.drain_until: float | None = None
        self.next_sample = self.started + PIDS_POLL_S
        self.seen = Seen()

    def run(self) -> Seen:
        while self.reading:
            now = time.monotonic()
            if self._enforce(now):
                break
            if now >= self.next_sample:
                self._sample()
                self.next_sample = now + PIDS_POLL_S
            self._step(now)
            if self.capper.exceeded:
                self.kill("output_limit")
        self.seen.wall_ms = int((time.monotonic() - self.started) * 1000)
        self.seen.drained = not self.reading
        self._sample()  # the leaf's last look, before the engine removes it
        if self.io.status >= 0:
            self._status()  # killed before the launcher spoke: whatever it said, if anything
        return self.seen

    def kill(self, reason: str) -> None:
        if self.drain_until is None:
            self.drain_until = time.monotonic() + DRAIN_AFTER_KILL_S
            log.info("job.kill", container=self.cid[:12], reason=reason)
            # In a thread: the loop keeps draining the pipes meanwhile.
            threading.Thread(target=self._kill, daemon=True).start()

    def _enforce(self, now: float) -> bool:
        """Timeout and cancellation; True once a kill's drain time is over."""
        if self.drain_until is not None:
            if now >= self.drain_until:
                log.warning("job.drain_timeout", container=self.cid[:12])
                return True
            return False
        if now >= self.deadline:
            self.seen.timed_out = True
            self.kill("timeout")
        elif self.cancel is not None and self.cancel.is_set():
            self.seen.cancelled = True
            self.kill("cancelled")
        return False

    def _step(self, now: float) -> None:
        until = self.deadline if self.drain_until is None else self.drain_until
        wait = max(0.0, min(TICK_S, until - now))
        held = self.drain_until is None and self.hold is not None and self.hold(READ_BYTES)
        watched = ([] if held else list(self.reading)) + ([self.io.status]
                                                          if self.io.status >= 0 else [])
        writing = [self.io.stdin] if self.io.stdin is not None else []
        readable, writable, _ = select.select(watched, writing, [],
                                              min(wait, HOLD_TICK_S) if held else wait)
        if writable:
            self._feed()
        for fd in readable:
            if fd == self.io.status:
                self._status()
            else:
                self._read(fd)

    def _feed(self) -> None:
        assert self.io.stdin is not None
        try:
            self.sent += os.write(self.io.stdin, self.view[self.sent: self.sent + WRITE_BYTES])
        except BlockingIOError:
            pass
        except BrokenPipeError:
            self.sent = len(self.view)  # the job stopped reading its stdin; its business
        if self.sent >= len(self.view):
            self.io.close_stdin()  # the job's EOF

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.reading.discard(fd)
            return
        taken = self.capper.feed(self.names[fd], data)
        if taken and self.spool is not None:
            self.spool.write(self.names[fd], taken)
        if taken and self.sink is not None:
            self.sink(self.names[fd], taken)

    def _status(self) -> None:
        """The launcher spoke (or went): take its word, sample the cgroup while the container
        still exists, then close the pipe, which lets the launcher end the container."""
        self.seen.said = parse_status(read_status(self.io)) or self.seen.said
        self._sample()
        self.io.close_status()

    def _sample(self) -> None:
        self.seen.pids_events = max(self.seen.pids_events,
                                    cgroup.pids_max_events(self.parent, self.cid))
        self.seen.oom_events = max(self.seen.oom_events, cgroup.oom_kills(self.parent, self.cid))
