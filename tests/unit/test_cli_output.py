"""The CLI's thin I/O around airlock/terminal.py: which stream is a terminal, --raw, the
summary's line (sys.stdout and sys.stderr replaced by terminals or pipes)."""

from __future__ import annotations

import io
import sys

import pytest

from airlock.output import Output
from airlock.terminal import MARK, RESET


class Stream(io.TextIOWrapper):
    """sys.stdout or sys.stderr as a terminal, or as a pipe."""

    def __init__(self, tty: bool, encoding: str = "utf-8") -> None:
        super().__init__(io.BytesIO(), encoding=encoding, write_through=True)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def seen(self) -> bytes:
        return self.buffer.getvalue()  # type: ignore[attr-defined,no-any-return]


JOB = b"airlock: job 0 ok exit=0\n\x1b[8m\xe2\x82"
SHOWN = b"airlock: job 0 ok exit=0\n" + rb"\x1b[8m\xe2\x82"


@pytest.mark.parametrize(("stdout_tty", "stderr_tty", "raw", "out", "err"), [
    (True, True, False, SHOWN, f"{RESET}\n{MARK}airlock:{RESET} job 1 nonzero_exit exit=3\n"),
    (False, True, False, JOB,  # a pipe: the bytes; the terminal saw no partial line
     f"{RESET}{MARK}airlock:{RESET} job 1 nonzero_exit exit=3\n"),
    (True, False, False, SHOWN, "airlock: job 1 nonzero_exit exit=3\n"),
    (True, True, True, JOB, f"{RESET}\n{MARK}airlock:{RESET} job 1 nonzero_exit exit=3\n"),
])
def test_the_cli_shows_a_terminal_escapes_and_a_pipe_the_bytes(
        monkeypatch: pytest.MonkeyPatch, stdout_tty: bool, stderr_tty: bool, raw: bool,
        out: bytes, err: str) -> None:
    stdout, stderr = Stream(stdout_tty), Stream(stderr_tty)
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    output = Output(raw)
    output.job("stdout", JOB[:-1])
    output.job("stdout", JOB[-1:])
    output.say("airlock: job 1 nonzero_exit exit=3")
    assert stdout.seen() == out
    assert stderr.seen() == err.encode()


def test_the_cli_shows_ascii_to_a_terminal_that_does_not_read_utf8(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = Stream(True, encoding="latin-1")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", Stream(True))
    Output().job("stdout", "Ã\x9b".encode())  # C3 9B: Ã then CSI to a Latin-1 terminal
    assert stdout.seen() == rb"\xc3\x9b"
