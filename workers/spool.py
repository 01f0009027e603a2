"""A job's output as it comes, whole (up to its output cap), on the host's disk: the worker
keeps only a head in memory and streams a bounded window to Redis, so the whole output waits
here until the result is written, then goes to PostgreSQL (``tasks.blobs``) and is removed.
The files collected from the job's volume (workers/collect.py) wait here too, one after the
other in one file (``files``), each at the offset its manifest entry says.

One folder per container, named after it (``<spool_dir>/<name>``, root's, 0700), so that the
reaper finds what a worker that died left (``workers.reaper.leftovers``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from base.errors import InfrastructureError
from workers import dirs

STREAMS = ("stdout", "stderr")
FILES = "files"
NAMES = (*STREAMS, FILES)
CHUNK_BYTES = 1024 * 1024
FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Spool:
    def __init__(self, spool_dir: str, name: str) -> None:
        self.folder = os.path.join(spool_dir, name)
        self.sizes = dict.fromkeys(STREAMS, 0)
        self._fds: dict[str, int] = {}
        self._files_end = 0

    def open(self) -> Spool:
        try:
            os.makedirs(os.path.dirname(self.folder), mode=0o700, exist_ok=True)
            os.mkdir(self.folder, 0o700)
            with dirs.opened(self.folder) as dir_fd:
                for stream in STREAMS:
                    self._fds[stream] = os.open(stream, FLAGS, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            self.remove()
            raise InfrastructureError(f"cannot make the job's spool {self.folder}: {exc}") from exc
        return self

    def write(self, stream: str, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fds[stream], view)
            view = view[written:]
        self.sizes[stream] += len(data)

    def chunks(self, stream: str, start: int = 0) -> Iterator[bytes]:
        """The stream's bytes from ``start``, CHUNK_BYTES at a time."""
        offset = start
        while offset < self.sizes[stream]:
            data = os.pread(self._fds[stream], CHUNK_BYTES, offset)
            if not data:
                return
            offset += len(data)
            yield data

    # The collected files (workers/collect.Sink) ----------------------------------------------

    @property
    def end(self) -> int:
        """Where the next collected file's bytes go."""
        return self._files_end

    def write_at(self, offset: int, data: memoryview) -> None:
        fd = self._fds.get(FILES)
        if fd is None:
            with dirs.opened(self.folder) as dir_fd:
                fd = self._fds[FILES] = os.open(FILES, FLAGS, 0o600, dir_fd=dir_fd)
        view = data
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written

    def keep(self, end: int) -> None:
        self._files_end = end

    def file_chunks(self, offset: int, size: int) -> Iterator[bytes]:
        """A collected file's bytes, CHUNK_BYTES at a time."""
        end = offset + size
        fd = self._fds.get(FILES)
        while offset < end:
            if fd is None:
                raise OSError(f"the spool has no {FILES}")
            data = os.pread(fd, min(CHUNK_BYTES, end - offset), offset)
            if not data:
                raise OSError(f"the spool's {FILES} ends before the file does")
            offset += len(data)
            yield data

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def remove(self) -> None:
        """Close and remove it (never raises; what it cannot remove, the reaper will)."""
        self.close()
        remove(self.folder)


def remove(folder: str) -> None:
    """Remove a spool folder by its path: only the files Airlock puts there."""
    try:
        with dirs.opened(folder) as dir_fd:
            for name in NAMES:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except OSError:
                    pass
        os.rmdir(folder)
    except OSError:
        pass
