"""A job container's stdin, stdout, stderr and status: four FIFOs, never the engine's attach
stream.

For each container the worker makes a folder of its own (``<io_dir>/<container name>``, root's,
0700) holding four FIFOs, and binds each read-only into the container under ``/.airlock``. The
launcher (PID 1, ``workers/launcher.c``) opens them as its fds 1, 2, 3 and 0 before anything
else. The job's output then goes from its pipe straight to the worker: no shim, no engine, no
stream framing between them, and no attach request per job.

- ``out`` and ``err`` (0602: the job's user may write, nobody in the container may read): the
  worker holds the read ends, opened before the container starts, so the launcher's open never
  waits. EOF on both means every process that held them is gone: the launcher, hence the
  whole container.
- ``in`` (0604: readable, not writable, from the container): the worker opens the write end
  once the launcher waits on its side. That open is the handshake: it succeeds only then, so a
  prepared sandbox is known to be up. The frame and the job's stdin go in; closing it is the
  job's EOF.
- ``status`` (0602 until the handshake, then 0600: nobody in the container may open it): the
  launcher holds it open, close-on-exec, from before the handshake, and writes the job's real
  wait status there as it ends. Once the handshake proves the launcher holds it, the worker
  takes the container's permission away (``revoke_status``), before any job exists: no process
  of the job can open it, so the job cannot forge its own end.

A bind of a single file cannot be renamed or replaced from inside, the read-only bind refuses
chmod, and the worker opens its own folder's entries with ``O_NOFOLLOW``. The pipes' buffers are
charged to the memory cgroup of the writer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import time
from dataclasses import dataclass
from typing import Any

from base.errors import InfrastructureError
from workers import dirs, identity, inner_sandbox

IN, OUT, ERR, STATUS = "in", "out", "err", "status"
FIFOS = (IN, OUT, ERR, STATUS)
CONTAINER_DIR = "/.airlock"
TARGETS = {which: f"{CONTAINER_DIR}/{which}" for which in FIFOS}
MODES = {IN: 0o604, OUT: 0o602, ERR: 0o602, STATUS: 0o602}
REVOKED = 0o600
PIPE_BYTES = 1024 * 1024  # each output pipe's buffer: fewer wake-ups while a job streams
CONNECT_POLL_S = 0.0005
GONE_CHECK_EVERY = 20  # tries: about every 10 ms
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def folder(io_dir: str, name: str) -> str:
    return os.path.join(io_dir, name)


def launcher_stdio() -> tuple[str, str, str, str]:
    """The container paths the launcher opens as its stdin, stdout, stderr and status."""
    return TARGETS[IN], TARGETS[OUT], TARGETS[ERR], TARGETS[STATUS]


def mounts(host_folder: str) -> list[dict[str, Any]]:
    """The engine's Mounts for one container's FIFOs (pure)."""
    return [{"Type": "bind", "Source": os.path.join(host_folder, which), "Target": TARGETS[which],
             "ReadOnly": True} for which in FIFOS]


@dataclass
class Pipes:
    """The worker's ends of one container's FIFOs."""

    folder: str
    out: int  # read ends, non-blocking
    err: int
    status: int
    stdin: int | None = None  # the write end, once the launcher waits on its side

    def close_stdin(self) -> None:
        if self.stdin is not None:
            fd, self.stdin = self.stdin, None
            os.close(fd)

    def close_status(self) -> None:
        """The worker has read the launcher's word: closing is its acknowledgement."""
        if self.status >= 0:
            fd, self.status = self.status, -1
            os.close(fd)

    def close(self) -> None:
        self.close_stdin()
        self.close_status()
        for fd in (self.out, self.err):
            try:
                os.close(fd)
            except OSError:
                pass  # closed already
        self.out = self.err = -1


def make(host_folder: str) -> Pipes:
    """Make the folder and its FIFOs and open the read ends (before the container starts)."""
    parent = os.path.dirname(host_folder)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.mkdir(host_folder, 0o700)
    except OSError as exc:
        raise InfrastructureError(f"cannot make the job's pipes in {host_folder}: {exc}") from exc
    fds: list[int] = []
    try:
        with dirs.opened(host_folder) as dir_fd:
            for which in FIFOS:
                os.mkfifo(which, 0o600, dir_fd=dir_fd)
                os.chmod(which, MODES[which], dir_fd=dir_fd)  # mkfifo's mode passed the umask
            for which in (OUT, ERR, STATUS):
                fd = os.open(which, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=dir_fd)
                fds.append(fd)
                _grow(fd)
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        remove(host_folder)
        raise InfrastructureError(f"cannot make the job's pipes in {host_folder}: {exc}") from exc
    return Pipes(host_folder, fds[0], fds[1], fds[2])


def _grow(fd: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: the default 64 KiB works, with more wake-ups


def connect_stdin(pipes: Pipes, timeout_s: float) -> bool:
    """Open the write end of ``in`` once the launcher has opened its side; False on timeout, or
    as soon as the launcher is seen gone (its output FIFOs at EOF: it opens them first).

    A non-blocking open of a FIFO for writing fails (ENXIO) until a reader has it open, so
    success is the launcher's handshake."""
    path = os.path.join(pipes.folder, IN)
    deadline = time.monotonic() + timeout_s
    tries = 0
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise InfrastructureError(f"cannot open the job's stdin {path}: {exc}") from exc
            tries += 1
            if time.monotonic() >= deadline or (tries % GONE_CHECK_EVERY == 0
                                                and launcher_gone(pipes)):
                return False
            time.sleep(CONNECT_POLL_S)
            continue
        pipes.stdin = fd
        revoke_status(pipes)
        return True


def revoke_status(pipes: Pipes) -> None:
    """After the handshake (the launcher holds ``status`` open): nobody in the container may
    open it any more. Before any job exists, so none can forge its end."""
    try:
        os.fchmod(pipes.status, REVOKED)  # the worker's own read end: the FIFO itself, no path
    except OSError as exc:
        raise InfrastructureError(f"cannot revoke the job's status pipe: {exc}") from exc


def read_status(pipes: Pipes) -> str:
    """What the launcher wrote on the status pipe (after the container ended: all of it)."""
    chunks = []
    while True:
        try:
            data = os.read(pipes.status, 4096)
        except (BlockingIOError, InterruptedError, OSError):
            break
        if not data:
            break
        chunks.append(data)
        if sum(map(len, chunks)) > 65536:
            break  # a launcher writes one short line
    return b"".join(chunks).decode("ascii", "replace")


def launcher_gone(pipes: Pipes) -> bool:
    """Output readable before the job is fed (EOF, or a message, from a launcher that quit),
    or the worker's ends already closed."""
    try:
        readable, _, _ = select.select([pipes.out, pipes.err], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def remove(host_folder: str) -> None:
    """Remove a container's folder (never raises; missing is fine). Only what Airlock puts
    there is unlinked (its FIFOs, its identity files, an agent's sandbox settings): anything
    else is not ours and stays, with the folder."""
    ours = [(which, stat.S_ISFIFO) for which in FIFOS] + [
        (which, stat.S_ISREG) for which in (*identity.TARGETS, *inner_sandbox.TARGETS)]
    try:
        with dirs.opened(host_folder) as dir_fd:
            for which, kind in ours:
                try:
                    if kind(os.stat(which, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                        os.unlink(which, dir_fd=dir_fd)
                except OSError:
                    pass
    except OSError:
        return  # no such folder, or not a folder of ours
    try:
        os.rmdir(host_folder)
    except OSError:
        pass
