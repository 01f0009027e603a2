"""The launcher: PID 1 of every job container, and the job's framing on stdin.

The launcher is a small static C program, ``workers/launcher.c``, built on the host by
``scripts/build-launcher.sh`` (to ``Settings.sandbox.launcher_path``, with the source's sha256 next to
it) and bind-mounted read-only into every job container at ``INIT_PATH``: no interpreter
starts before the job, and any image can run it (no Python needed).

The job's stdin, stdout and stderr are FIFOs the worker makes for each container and binds into
it (``workers/pipes.py``), named on the launcher's command line with a fourth, ``status``: the
launcher opens them as its fds 0, 1, 2 and 3 (close-on-exec) before anything else, so the job's
I/O never passes through the engine, and the launcher reports the job's real wait status where
the job cannot write (``parse_status``).
A container starts with the launcher waiting on stdin (at most ``max_wait_s``); the worker then
sends one framed payload (argv, env, files, deadline) followed by the job's own stdin. The
launcher reads exactly the frame (the header byte by byte, the body with exact-length reads),
writes the files, forks the job, reaps every process (it is the init), and kills the whole
container when the job's main process ends or when its own deadline passes. That deadline is a
backstop that holds even if the worker died: PID 1 of a namespace cannot be SIGKILLed from
inside it, and it makes itself non-dumpable so the job (same uid) cannot rewrite it through
/proc/1/mem.

Because the container is created and started before its job arrives, the same path serves a
cold job and one taken from a warm pool.

The frame (``encode_payload``)::

    header  b"AIRLOCK1 <n>\\n"        n: the body's length in decimal ASCII, 0 < n <= MAX_BODY
    body    u32 deadline_ms           the launcher kills everything this long after the fork
            str cwd                   absolute; the job's files go under it, the job runs in it
            u32 argc, argc x str      argv; argc >= 1; argv[0] is looked up on the env's PATH
            u32 envc, envc x str      "NAME=value", exactly the job's environment
            u32 filec, filec x (str name, u32 mode, u32 size, size raw bytes)
                                      name relative, no empty, "." or ".." parts;
                                      mode 0644, or 0755 (executable)
    then    the job's stdin, untouched, to its end

Every integer is unsigned 32-bit big-endian. A ``str`` is its u32 length, its bytes (UTF-8, no
NUL among them), then one NUL byte the length does not count, so the launcher uses each string
in place. Nothing may follow the last file inside the body. The launcher's own exit statuses:
124 a stdio FIFO it could not open (or not within ``STDIO_WAIT_S``: its worker died before the
handshake), 125 no payload in time or cut short, 126 malformed payload
or a file it could not write (it never follows a symlink: O_NOFOLLOW at every step), 127 the
job could not be started; else the job's (128 + signal for a signal, 137 at the deadline).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Collection, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

# Exit status the launcher uses for its own failures, so they are not confused with the job's.
EXIT_NO_STDIO = 124
STDIO_WAIT_S = 30  # launcher.c's: how long the stdio FIFOs may take to open (then exit 124)
EXIT_NO_PAYLOAD = 125
EXIT_BAD_PAYLOAD = 126
EXIT_EXEC_FAILED = 127
EXIT_DEADLINE = 137

SOURCE = Path(__file__).with_name("launcher.c")
INIT_PATH = "/.airlock/init"  # where the host's binary is bound, read-only, in every job container
HASH_SUFFIX = ".sha256"  # the source's sha256 the binary was built from, next to it
BUILD_FIX = "run: sudo bash scripts/build-launcher.sh"
MAGIC = b"AIRLOCK1 "
MAX_BODY = 64 * 1024 * 1024  # also launcher.c's
MAX_COUNT = 65536  # argv entries, env entries, files: each (also launcher.c's)
FILE_MODE, EXEC_MODE = 0o644, 0o755  # the only modes a file is written with (launcher.c's)
_U32 = struct.Struct(">I")


def launcher_command(max_wait_s: int, stdio: Sequence[str] = ()) -> list[str]:
    """The container's command: the launcher, waiting at most ``max_wait_s`` for its job, with
    its stdin, stdout, stderr and status at the ``stdio`` paths (in that order) when given."""
    if len(stdio) not in (0, 4):
        raise ValueError("stdio names stdin, stdout, stderr and status, or nothing")
    return [INIT_PATH, str(max(1, int(max_wait_s))), *stdio]


@dataclass(frozen=True, slots=True)
class LauncherStatus:
    """How the job ended, as its launcher saw it: ``exit`` N, ``signal`` S, ``deadline`` (the
    launcher's own backstop fired), or ``launcher`` N (the launcher's own failure, 124-127)."""

    kind: str
    value: int

    @property
    def exit_code(self) -> int:
        """As shells report it (128 + S for a signal)."""
        if self.kind == "signal":
            return 128 + self.value
        if self.kind == "deadline":
            return EXIT_DEADLINE
        return self.value


STATUS_KINDS = ("exit", "signal", "deadline", "launcher")


def parse_status(text: str) -> LauncherStatus | None:
    """The first well-formed ``airlock-status <kind> <n>`` line, or None (the launcher was
    killed before it could write one: a timeout, a cancel, an OOM kill of PID 1). The first:
    a job that could not be started says ``launcher 127`` from the launcher's own child before
    the launcher reaps it and sees an exit status of 127."""
    for line in text.splitlines():
        parts = line.split()
        if (len(parts) == 3 and parts[0] == "airlock-status" and parts[1] in STATUS_KINDS
                and parts[2].isdigit() and len(parts[2]) <= 10):
            return LauncherStatus(parts[1], int(parts[2]))
    return None


def source_sha256() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def check_binary(host_path: str) -> str | None:
    """None when the launcher at ``host_path`` is fit to bind into job containers; else why not
    (missing, not a root-owned regular executable, writable by anyone but root, or built from
    another source than this package's ``launcher.c``), naming the fix."""
    path = Path(host_path)
    try:
        st = path.lstat()
    except OSError as exc:
        return f"launcher {host_path} is missing ({exc.strerror}); {BUILD_FIX}"
    if not path.is_file() or path.is_symlink():
        return f"launcher {host_path} is not a regular file; {BUILD_FIX}"
    if st.st_mode & 0o6000:
        return f"launcher {host_path} is set-user/group-ID (mode {st.st_mode & 0o7777:o}); {BUILD_FIX}"
    if st.st_mode & 0o111 != 0o111:
        return f"launcher {host_path} is not executable by all (mode {st.st_mode & 0o7777:o}); {BUILD_FIX}"
    # Root's alone: the file and every folder above it (a sticky folder such as /tmp may be
    # world-writable: nobody else can rename or remove root's entries in it).
    for where in (path, *path.parents):
        info = where.stat()
        others_write = info.st_mode & 0o022 and not (where != path and info.st_mode & 0o1000)
        if info.st_uid != 0 or others_write:
            return (f"launcher {host_path}: {where} is writable by non-root (uid {info.st_uid}, "
                    f"mode {info.st_mode & 0o7777:o}); {BUILD_FIX}")
    try:
        recorded = Path(host_path + HASH_SUFFIX).read_text().split()[0]
    except (OSError, IndexError):
        return f"launcher {host_path} has no recorded source hash ({host_path}{HASH_SUFFIX}); {BUILD_FIX}"
    if recorded != source_sha256():
        return (f"launcher {host_path} is stale: built from source {recorded[:12]}, the package's "
                f"{SOURCE.name} is {source_sha256()[:12]}; {BUILD_FIX}")
    return None


def _text(value: str | bytes, what: str) -> bytes:
    data = value if isinstance(value, bytes) else os.fsencode(value)
    if b"\0" in data:
        raise ValueError(f"{what} contains a NUL byte")
    if len(data) > MAX_BODY:
        raise ValueError(f"{what} is over {MAX_BODY} bytes")
    return _U32.pack(len(data)) + data + b"\0"


def _count(items: Sized, what: str) -> bytes:
    if len(items) > MAX_COUNT:
        raise ValueError(f"more than {MAX_COUNT} {what}")
    return _U32.pack(len(items))


def encode_payload(
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    files: Mapping[str, bytes],
    deadline_s: float,
    cwd: str = "/workspace",
    executable: Collection[str] = (),
) -> bytes:
    """Frame a job for the launcher (the module's docstring); the job's stdin follows it.
    The files named in ``executable`` are written 0755, the others 0644."""
    if not argv:
        raise ValueError("argv is empty")
    if not cwd.startswith("/"):
        raise ValueError("cwd must be absolute")
    if not math.isfinite(deadline_s) or not 0 <= round(deadline_s * 1000) < 2**32:
        raise ValueError(f"deadline_s {deadline_s} is out of range")
    parts = [_U32.pack(round(deadline_s * 1000)), _text(cwd, "cwd"), _count(argv, "arguments")]
    parts += [_text(arg, "argv") for arg in argv]
    parts.append(_count(env, "environment variables"))
    for name, value in env.items():
        if not name or "=" in name:
            raise ValueError(f"environment variable name {name!r} is empty or has '='")
        parts.append(_text(f"{name}={value}", f"env {name}"))
    parts.append(_count(files, "files"))
    for name, data in files.items():
        if len(data) > MAX_BODY:
            raise ValueError(f"file {name!r} is over {MAX_BODY} bytes")
        mode = EXEC_MODE if name in executable else FILE_MODE
        parts += [_text(name, "file name"), _U32.pack(mode), _U32.pack(len(data)), bytes(data)]
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise ValueError(f"payload of {len(body)} bytes is over {MAX_BODY}")
    return MAGIC + b"%d\n" % len(body) + body
