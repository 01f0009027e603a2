"""The globs a job names to collect under /workspace (``collect``), matched on bytes; pure.

A pattern is a relative path of parts joined by ``/``. A part is a name that may hold
fnmatch's wildcards (``*``, ``?``, ``[...]``), which match within one name, dot files and
names that are not UTF-8 included; or ``**`` alone, any number of folders, none included.
``out/**`` is every file below ``out``; ``**/*.png`` every PNG anywhere; ``report.pdf`` that
one file. Never absolute, never ``..``, no empty or ``.`` part (``problem`` says why not).

The walk (workers/collect.py) asks ``step`` about each entry of a folder with the states that
reached that folder: whether the entry is matched, and the states its own entries start from.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

NAME_MAX = 255  # bytes, one part (one name in a folder)
PATTERN_MAX = 1024  # bytes, one pattern
MAX_PATTERNS = 64
ANY = b"**"
WILD = re.compile(rb"[*?\[]")

State = tuple[int, int]  # (which pattern, how many of its parts matched so far)


def problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a glob under /workspace, or None."""
    raw = pattern.encode("utf-8", "surrogateescape")
    if len(raw) > PATTERN_MAX:
        return f"is over {PATTERN_MAX} bytes"
    if raw.startswith(b"/"):
        return "must be relative to /workspace, not absolute"
    parts = raw.split(b"/")
    if b".." in parts:
        return "must not go up ('..')"
    if any(p in (b"", b".") for p in parts):
        return "must be a relative path without empty or '.' parts"
    if any(len(p) > NAME_MAX for p in parts):
        return f"has a part over {NAME_MAX} bytes"
    if any(ANY in p and p != ANY for p in parts):
        return "'**' must be a whole part (as in out/**/*.csv)"
    return None


@dataclass(frozen=True, slots=True)
class Globs:
    """Patterns, each as its parts (bytes), checked."""

    parts: tuple[tuple[bytes, ...], ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Globs:
        listed = list(patterns)
        for pattern in listed:
            why = problem(pattern)
            if why is not None:
                raise ValueError(f"{pattern!r} {why}")
        return cls(tuple(tuple(p.encode("utf-8", "surrogateescape").split(b"/")) for p in listed))

    def start(self) -> frozenset[State]:
        return frozenset((i, 0) for i in range(len(self.parts)))

    def step(self, states: frozenset[State], name: bytes) -> Step:
        """What ``name``, an entry of a folder the ``states`` reached, is to the patterns."""
        matched: list[int] = []
        inner: set[State] = set()
        for p, i in _closure(self.parts, states):
            parts = self.parts[p]
            part, last = parts[i], i == len(parts) - 1
            if part == ANY:  # a folder it goes through, or with ``**`` last any file below
                inner.add((p, i))
                if last:
                    matched.append(p)
            elif _matches(name, part):
                if last:
                    matched.append(p)
                else:
                    inner.add((p, i + 1))
        literal = any(not WILD.search(self.parts[p][-1]) for p in matched)
        return Step(tuple(sorted(set(matched))), frozenset(inner), literal)


@dataclass(frozen=True, slots=True)
class Step:
    matched: tuple[int, ...]  # the patterns that name this entry itself
    inner: frozenset[State]  # where its own entries start, if it is a folder
    literal: bool = False  # named by a pattern's last part without a wildcard

    @property
    def wanted(self) -> bool:
        return bool(self.matched or self.inner)


def _closure(parts: Sequence[tuple[bytes, ...]], states: Iterable[State]) -> set[State]:
    """``**`` also matches no folder at all: a state before one is also the state after it."""
    out: set[State] = set()
    todo = list(states)
    while todo:
        p, i = todo.pop()
        if (p, i) in out or i >= len(parts[p]):
            continue
        out.add((p, i))
        if parts[p][i] == ANY and i + 1 < len(parts[p]):
            todo.append((p, i + 1))
    return out


def _matches(name: bytes, part: bytes) -> bool:
    if not WILD.search(part):
        return name == part
    return _compiled(part).match(name) is not None


@lru_cache(maxsize=256)
def _compiled(part: bytes) -> re.Pattern[bytes]:
    # fnmatch's translation, on bytes through latin-1 (one character per byte, both ways).
    return re.compile(fnmatch.translate(part.decode("latin-1")).encode("latin-1"))
