"""Collecting a job's files from its volume once the job has ended: the walk and the reads.

The container has stopped (its launcher killed every process of the job before it exited),
so nothing of the job runs while the worker reads; the job still chose every name, link and
file type it left, so the worker trusts none of them:

- Every open is below the job's /workspace and refuses a link at any component
  (workers/beneath.py: openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or an O_NOFOLLOW walk).
- A folder's entries come from its listing (``d_type``); only a regular file is opened, with
  O_NONBLOCK (a FIFO never blocks the worker), and checked again with ``fstat`` on the open
  fd. A link, FIFO, socket or device is refused without being opened.
- Sizes are apparent sizes (a sparse terabyte is refused by the cap, never read).
- A file whose identity, size or times differ after the read from before it (or that gave
  more or fewer bytes than its size) changed while read: refused, its bytes discarded.
- The caps (count, bytes each, total) and the walk's own bounds (entries, seconds) come from
  settings; every refusal is an entry with its reason (past ``refusals_listed``, counted).

What is taken goes to the job's spool on the host (``Sink``), with its sha256, until the
result is written (tasks/results.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from base import names
from workers import dirs
from workers.beneath import DIR_FLAGS, FILE_FLAGS, open_beneath
from workers.collecting import (
    CollectCaps,
    Collection,
    Entry,
    Status,
    Tally,
    not_regular,
    refused_all,
)
from workers.globs import Globs

CHUNK = 1024 * 1024
PATH_MAX = 4095
LINK_REASON = "not a regular file: a symbolic link (never followed)"


class Sink(Protocol):
    """Where collected bytes go: ``write_at`` them from ``end``; ``end`` moves on only when
    ``keep`` says so (a refused file's bytes are then overwritten)."""

    @property
    def end(self) -> int: ...

    def write_at(self, offset: int, data: memoryview) -> None: ...

    def keep(self, end: int) -> None: ...


class SinkFailed(Exception):
    """The worker could not keep what it read (its own disk): the collection stops."""


@dataclass
class _Walk:
    root_fd: int
    globs: Globs
    caps: CollectCaps
    sink: Sink
    clock: Callable[[], float] = time.monotonic
    out: Collection = field(default_factory=Collection)
    named: set[int] = field(default_factory=set)  # patterns that named something
    seen: int = 0
    deadline: float = 0.0
    buffer: bytearray = field(default_factory=lambda: bytearray(CHUNK))

    def run(self) -> None:
        self.deadline = self.clock() + self.caps.time_s
        self.out.listed_cap = self.caps.refusals_listed
        tally = Tally(self.caps)
        stack: list[tuple[bytes, frozenset[tuple[int, int]]]] = [(b"", self.globs.start())]
        while stack and self.out.stopped is None:
            folder, states = stack.pop()
            inner = self._folder(folder, states, tally)
            stack.extend(reversed(inner))

    def _folder(self, folder: bytes, states: frozenset[tuple[int, int]],
                tally: Tally) -> list[tuple[bytes, frozenset[tuple[int, int]]]]:
        """Take what the patterns name in one folder; return its subfolders to walk."""
        inner = []
        for name, mode in self._listing(folder):
            if self._spent():
                break
            step = self.globs.step(states, name)
            if not step.wanted:
                continue
            path = folder + name
            self.named.update(step.matched)
            if stat.S_ISDIR(mode):
                if step.matched and step.literal:
                    self._refuse(path, "not a regular file: a folder: name its files (as in"
                                       f" {names.to_text(path)}/**)")
                if step.inner:
                    inner.append((path + b"/", step.inner))
            elif step.matched or stat.S_ISLNK(mode):  # a link a pattern would go through too
                self._take(path, mode, tally)
        return inner

    def _spent(self) -> bool:
        self.seen += 1
        if self.seen > self.caps.walk_entries:
            self.out.stopped = (f"stopped after {self.caps.walk_entries} entries of /workspace:"
                                " the rest was not looked at")
        elif self.clock() > self.deadline:
            self.out.stopped = (f"stopped after {self.caps.time_s:g} s: the rest was not"
                                " looked at")
        return self.out.stopped is not None

    def _listing(self, folder: bytes) -> list[tuple[bytes, int]]:
        """(name, file type bits) of each entry, sorted, from the folder's listing alone."""
        try:
            fd = open_beneath(self.root_fd, folder.rstrip(b"/"), DIR_FLAGS) if folder \
                else os.dup(self.root_fd)
        except OSError as exc:
            self._refuse(folder.rstrip(b"/"), f"cannot open the folder: {_why(exc)}")
            return []
        found = []
        try:
            with os.scandir(fd) as listing:
                for entry in listing:
                    found.append((os.fsencode(entry.name), _kind(entry)))
                    if len(found) + self.seen > self.caps.walk_entries:
                        break
        except OSError as exc:
            self._refuse(folder.rstrip(b"/"), f"cannot list the folder: {_why(exc)}")
        finally:
            os.close(fd)
        return sorted(found)

    def _take(self, path: bytes, mode: int, tally: Tally) -> None:
        why = not_regular(mode)
        if why is not None:
            self._refuse(path, why)  # never opened: a FIFO, a device, a link
            return
        if len(path) > PATH_MAX:
            self._refuse(path, "its path is over 4095 bytes")
            return
        try:
            fd = open_beneath(self.root_fd, path, FILE_FLAGS)
        except OSError as exc:
            self._refuse(path, LINK_REASON if exc.errno == errno.ELOOP else
                         f"cannot open: {_why(exc)}")
            return
        try:
            self._read(path, fd, tally)
        finally:
            os.close(fd)

    def _read(self, path: bytes, fd: int, tally: Tally) -> None:
        before = os.fstat(fd)
        why = not_regular(before.st_mode) or tally.refusal(before.st_size)
        if why is not None:
            self._refuse(path, why, before.st_size)
            return
        start = self.sink.end
        digest, size = self._copy(fd, start, before.st_size)
        if size != before.st_size or _changed(before, os.fstat(fd)):
            self._refuse(path, "changed while it was read", before.st_size)
            return
        tally.take(size)
        self.sink.keep(start + size)
        self.out.add(Entry(path, Status.COLLECTED, None, size, stat.S_IMODE(before.st_mode),
                           digest, start))

    def _copy(self, fd: int, start: int, expected: int) -> tuple[str, int]:
        """Read the file to its end (at most one byte past its size) into the sink."""
        digest = hashlib.sha256()
        view = memoryview(self.buffer)
        size = 0
        while size <= expected:
            n = os.readv(fd, [view[:min(CHUNK, expected + 1 - size)]])
            if n == 0:
                break
            digest.update(view[:n])
            try:
                self.sink.write_at(start + size, view[:n])
            except OSError as exc:
                raise SinkFailed(f"the worker could not keep it: {_why(exc)}") from exc
            size += n
        return digest.hexdigest(), size

    def _refuse(self, path: bytes, reason: str, size: int | None = None) -> None:
        self.out.add(Entry(path or b".", Status.REFUSED, reason, size))


def _kind(entry: os.DirEntry[str]) -> int:
    """The entry's file type bits, from its listing (lstat only where d_type is unknown)."""
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    try:
        return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return 0


def _changed(a: os.stat_result, b: os.stat_result) -> bool:
    return ((a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns)
            != (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns))


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def collect(workspace_fd: int, patterns: tuple[str, ...], caps: CollectCaps, sink: Sink,
            clock: Callable[[], float] = time.monotonic) -> Collection:
    """The files ``patterns`` name below the folder ``workspace_fd``, taken into ``sink``."""
    walk = _Walk(workspace_fd, Globs.of(patterns), caps, sink, clock)
    try:
        walk.run()
    except SinkFailed as exc:
        walk.out.stopped = str(exc)
    walk.out.unmatched = tuple(p for i, p in enumerate(patterns) if i not in walk.named)
    return walk.out


def from_volume(volume_path: Path | None, patterns: tuple[str, ...], caps: CollectCaps,
                sink: Sink) -> Collection:
    """Collect from a job's volume (workers/storage.py): its ``workspace`` folder."""
    if volume_path is None:
        return refused_all(patterns, "this worker keeps job volumes in memory (tmpfs), which"
                                     " it cannot read once the job has ended")
    try:
        with dirs.opened(volume_path) as volume_fd:
            root = open_beneath(volume_fd, b"workspace", DIR_FLAGS)
    except OSError as exc:
        return refused_all(patterns, f"the job's workspace could not be opened: {_why(exc)}")
    try:
        return collect(root, patterns, caps, sink)
    finally:
        os.close(root)
