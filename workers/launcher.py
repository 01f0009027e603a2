"""The launcher: PID 1 of every job container, and the job's framing on stdin.

A container starts with the launcher waiting on stdin; the worker then sends one framed
payload (argv, env, files, deadline) followed by the job's own stdin. The launcher writes the
files, forks the job, reaps every process (it is the init), and kills the whole container when
the job's main process ends or when its own deadline passes. That deadline is a backstop that
holds even if the worker died: PID 1 of a namespace cannot be SIGKILLed from inside it, and it
makes itself non-dumpable so the job (same uid) cannot rewrite it through /proc/1/mem.

Because the container is created and started before its job arrives, the same path serves a
cold job and one taken from a warm pool.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence

# Exit status the launcher uses for its own failures, so they are not confused with the job's.
EXIT_NO_PAYLOAD = 125
EXIT_BAD_PAYLOAD = 126
EXIT_EXEC_FAILED = 127

LAUNCHER_SOURCE = r"""
import ctypes, json, os, signal, sys, time, base64
def fail(code, msg):
    os.write(2, ("airlock: " + msg + "\n").encode()); os._exit(code)
def read_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk: fail(125, "payload cut short")
        buf += chunk
    return bytes(buf)
def read_header():
    line = bytearray()
    while not line.endswith(b"\n"):
        b = os.read(0, 1)
        if not b or len(line) > 12: fail(125, "no payload")
        line += b
    return int(line)
signal.signal(signal.SIGALRM, lambda *_: fail(125, "no job arrived in time"))
signal.alarm(int(sys.argv[1]))
try:
    job = json.loads(read_exact(read_header()))
except ValueError:
    fail(126, "malformed payload")
signal.alarm(0)
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
os.umask(0o022)
for name, data in job["files"].items():
    path = os.path.join(job["cwd"], name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.write(fd, base64.b64decode(data)); os.close(fd)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
pid = os.fork()
if pid == 0:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        os.chdir(job["cwd"]); os.execvpe(job["argv"][0], job["argv"], job["env"])
    except OSError as exc:
        fail(127, "cannot run %r: %s" % (job["argv"][0], exc.strerror))
os.close(0)
deadline = time.monotonic() + job["deadline_s"]
status = None
while status is None:
    left = deadline - time.monotonic()
    if left <= 0:
        status = 128 + 9; break
    signal.sigtimedwait({signal.SIGCHLD}, left)
    while True:
        try:
            p, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if p == 0: break
        if p == pid: status = os.waitstatus_to_exitcode(st)
try: os.kill(-1, signal.SIGKILL)
except OSError: pass
sys.stdout.flush()
os._exit(status if status >= 0 else 128 - status)
"""


def launcher_command(python: str, max_wait_s: int) -> list[str]:
    """The container's command: the launcher, waiting at most ``max_wait_s`` for its job."""
    return [python, "-I", "-S", "-c", LAUNCHER_SOURCE, str(max(1, int(max_wait_s)))]


def encode_payload(
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    files: Mapping[str, bytes],
    deadline_s: float,
    cwd: str = "/workspace",
) -> bytes:
    """Frame a job for the launcher: ``<length>\\n<json>``; the job's stdin follows it."""
    body = json.dumps(
        {
            "argv": list(argv),
            "env": dict(env),
            "files": {name: base64.b64encode(data).decode() for name, data in files.items()},
            "deadline_s": deadline_s,
            "cwd": cwd,
        },
        separators=(",", ":"),
    ).encode()
    return b"%d\n" % len(body) + body
