"""A job that prints escapes cannot hide, fake or follow Airlock's summary on a person's
terminal (ATTACKS.md A37): the CLI on a real pty, against a real worker. A pipe, and --raw,
still get the job's bytes exactly."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import termios
import time

import pytest

from airlock.terminal import MARK, RESET
from config.settings import Settings
from tests.integration.test_cli import airlock
from tests.services import ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]

FAKE = b"airlock: job 00000000-0000-4000-8000-000000000000 ok exit=0 wall=1ms cpu=1ms"
STDOUT = (FAKE + b"\n"
          + b"\x1b[8m"  # conceal what follows: the real summary
          + b"\x1b]0;pwned\x07\x1b]2;pwned\x1b\\"  # window title, ended by BEL, by ST
          + b"\x1b]52;c;ZWNobyBwd25lZA==\x07"  # write the clipboard
          + b"\x1b[2J\x1b[H\x1b[1A\x1b[2K\r"  # clear, home, cursor up, erase the line, CR
          + "\u202eevil\u2066".encode()  # bidi override and isolate
          + b"\xc2\x9b31m\x9b\xff")  # C1 CSI encoded, as a lone byte; not UTF-8
STDERR = b"\x1b[8m\x1b]0;err\x07" + FAKE  # no newline: the summary would join this line
JOB = (f"import sys\nsys.stdout.buffer.write({STDOUT!r})\nsys.stdout.flush()\n"
       f"sys.stderr.buffer.write({STDERR!r})\nsys.exit(3)\n")
SUMMARY = re.compile(re.escape(f"{MARK}airlock:{RESET} job ") + r"([0-9a-f-]{36}) nonzero_exit exit=3 ")


def on_terminals(settings: Settings, *args: str, separate: bool = False,
                 timeout: float = 120) -> tuple[int, bytes, bytes]:
    """``airlock ARGS`` with stdout and stderr on a pty (one for both, or one each): its exit
    status and what each terminal received. Output processing is off, so that is exactly
    what the CLI wrote (no newline turned into CR LF)."""
    ptys = [os.openpty() for _ in range(2 if separate else 1)]
    for _, follower in ptys:
        attrs = termios.tcgetattr(follower)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(follower, termios.TCSANOW, attrs)
    proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", *args], cwd=ROOT,
                            env=worker_env(settings), stdin=subprocess.DEVNULL,
                            stdout=ptys[0][1], stderr=ptys[-1][1])
    received = {leader: bytearray() for leader, _ in ptys}
    try:
        for _, follower in ptys:
            os.close(follower)
        _read_until_closed(received, time.monotonic() + timeout)
        code = proc.wait(timeout=10)
    finally:
        proc.kill()
        for leader in received:
            os.close(leader)
    seen = [bytes(received[leader]) for leader, _ in ptys]
    return code, seen[0], seen[1] if separate else b""


def _read_until_closed(received: dict[int, bytearray], deadline: float) -> None:
    left = set(received)
    while left:
        assert time.monotonic() < deadline, {fd: bytes(data[-500:]) for fd, data in received.items()}
        ready, _, _ = select.select(list(left), [], [], 1.0)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the CLI has exited and closed its end
                chunk = b""
            received[fd] += chunk
            if not chunk:
                left.discard(fd)


def assert_shown_safely(seen: bytes) -> str:
    """What a terminal received holds the job's escapes made visible, no raw control from
    the job, and Airlock's summary last, alone on its line, marked. Returns the job's id."""
    text = seen.decode("utf-8")  # strict: no byte that is not UTF-8 reached the terminal
    ours = text.replace(RESET, "").replace(MARK, "")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]",
                         ours), repr(ours)
    for escape in (r"\x1b[8m", r"\x1b]0;pwned\x07", r"\x1b]2;pwned\x1b\\", r"\x1b]52;c;",
                   r"\x1b[2J", r"\x1b[1A", r"\r", r"\u202eevil\u2066", r"\x9b31m", r"\x9b\xff",
                   r"\x1b]0;err\x07"):
        assert escape in ours, (escape, ours)
    lines = text.split("\n")
    assert lines[-1] == "" and text.count(MARK) == 1, repr(text)
    summary = SUMMARY.match(lines[-2])  # the last line, from its start: on a fresh line
    assert summary, repr(text)
    assert FAKE.decode() in text and f"{MARK}{FAKE.decode()}" not in text  # the fake: unmarked
    return summary.group(1)


@pytest.fixture(scope="module")
def piped(settings: Settings, worker: WorkerProcess) -> subprocess.CompletedProcess[bytes]:
    """The job, run once with the CLI's output going to pipes."""
    return airlock(settings, "run", "-c", JOB)


def piped_id(piped: subprocess.CompletedProcess[bytes]) -> str:
    found = re.search(rb"airlock: job ([0-9a-f-]{36}) nonzero_exit exit=3 ", piped.stderr)
    assert found, piped.stderr
    return found.group(1).decode()


def test_run_on_a_terminal_shows_the_escapes_and_the_real_summary(
        settings: Settings, worker: WorkerProcess) -> None:
    code, seen, _ = on_terminals(settings, "run", "-c", JOB)
    assert code == 3, repr(seen)
    assert_shown_safely(seen)


@pytest.mark.parametrize("command", ["logs", "result"])
def test_logs_and_result_on_a_terminal_show_the_escapes_and_the_real_summary(
        settings: Settings, piped: subprocess.CompletedProcess[bytes], command: str) -> None:
    job_id = piped_id(piped)
    code, seen, _ = on_terminals(settings, command, job_id)
    assert code == 0, repr(seen)
    assert assert_shown_safely(seen) == job_id


def test_a_pipe_gets_the_bytes_exactly(settings: Settings,
                                       piped: subprocess.CompletedProcess[bytes]) -> None:
    job_id = piped_id(piped)
    assert (piped.returncode, piped.stdout) == (3, STDOUT)
    assert piped.stderr.startswith(STDERR + b"airlock: job ")
    logs = airlock(settings, "logs", job_id)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, STDOUT, STDERR)
    result = airlock(settings, "result", job_id)
    assert (result.returncode, result.stdout) == (0, STDOUT)
    assert result.stderr.startswith(STDERR + b"airlock: job " + job_id.encode())


@pytest.mark.parametrize("command", ["run", "logs", "result"])
def test_raw_gives_a_terminal_the_bytes_exactly(settings: Settings,
                                                piped: subprocess.CompletedProcess[bytes],
                                                command: str) -> None:
    args = ("-c", JOB) if command == "run" else (piped_id(piped),)
    code, out, err = on_terminals(settings, command, "--raw", *args, separate=True)
    assert (code, out) == (3 if command == "run" else 0, STDOUT)
    # The job's stderr exactly; then Airlock's line, reset, on a line of its own, marked.
    assert err.startswith(STDERR + f"{RESET}\n".encode()), repr(err)
    assert SUMMARY.match(err[len(STDERR) + len(RESET) + 1:].decode()), repr(err)
