"""Showing a job's output to a person: a terminal gets it made visible (airlock/terminal.py)
unless ``--raw``; a pipe or a file gets the bytes exactly; Airlock's own lines go to stderr."""

from __future__ import annotations

import codecs
import sys
from typing import Any, TextIO

import click

from airlock.terminal import Screen, one_line


def _utf8(stream: TextIO) -> bool:
    return codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "utf-8"


class Output:
    """Our stdout and stderr. A terminal is shown job bytes made visible (airlock/terminal.py)
    unless ``raw``; a pipe or a file gets them exactly. Airlock's own lines go to stderr.
    When both are terminals they are taken as one (the same one, nearly always)."""

    def __init__(self, raw: bool = False) -> None:
        streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        self.binary = {kind: stream.buffer for kind, stream in streams.items()}
        self.ttys = {kind for kind, stream in streams.items() if stream.isatty()}
        self.raw = raw
        self.screen = Screen(ascii_only=not all(_utf8(streams[kind]) for kind in self.ttys))

    @property
    def on_terminal(self) -> bool:
        """Airlock's own lines go to a person's terminal."""
        return "stderr" in self.ttys

    def job(self, kind: str, data: bytes) -> None:
        """A chunk of the job's stdout or stderr."""
        if kind in self.ttys and self.raw:
            self.screen.passed(data)
        elif kind in self.ttys:
            data = self.screen.show(kind, data).encode("utf-8", "backslashreplace")
        self._write(kind, data)

    def say(self, text: str, *, interrupted: bool = False) -> None:
        """One of Airlock's own lines ("airlock: ..."); on a terminal it ends what the job's
        output held back (a partial UTF-8 sequence) and starts on a fresh line, marked."""
        if not self.raw:
            for kind in sorted(self.ttys):
                self._write(kind, self.screen.finish(kind).encode("utf-8", "backslashreplace"))
        if not self.on_terminal:
            click.echo(("\n" if interrupted else "") + one_line(text), err=True)
            return
        line = self.screen.own_line(text, interrupted=interrupted)
        self._write("stderr", line.encode("utf-8", "backslashreplace"))

    def _write(self, kind: str, data: bytes) -> None:
        if data:
            self.binary[kind].write(data)
            self.binary[kind].flush()


class OutputRelay:
    """Writes a job's output events to an Output as they come; remembers the offset and
    whether the job's end was seen."""

    def __init__(self, output: Output, offset: str = "0-0") -> None:
        self.output = output
        self.offset = offset
        self.ended = False

    def run(self, client: Any, job_id: str, follow: bool = True) -> None:
        for event in client.events(job_id, self.offset, follow=follow):
            if event.kind in ("stdout", "stderr"):
                self.output.job(event.kind, event.data)
            elif event.kind == "lagging":
                skipped = sum(event.summary.values())
                self.output.say(f"airlock: live output fell behind: {skipped} bytes skipped here"
                                 " (the stored result has them once it ends)")
            elif event.kind == "truncated":
                self.output.say("airlock: live output stops here (its bound is reached);"
                                 " the job goes on")
            self.ended = event.kind == "end"
            self.offset = event.offset


