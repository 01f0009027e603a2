"""What a collection decides, pure: which file is taken and which refused, and why.

The walk and the reads are workers/collect.py's; here are the values it produces (an
``Entry`` per file, a ``Collection`` for the job) and the decisions it asks for: what a
non-regular file is called, whether a file fits the caps, when the walk must stop.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from base import names


class Status(StrEnum):
    COLLECTED = "collected"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Entry:
    """One file a pattern named: taken (its bytes at ``offset`` in the spool's files) or
    refused with its reason. ``path`` is relative to /workspace, as the job named it."""

    path: bytes
    status: Status
    reason: str | None = None
    size: int | None = None  # apparent size (a sparse file's too)
    mode: int | None = None  # permission bits
    sha256: str | None = None
    offset: int = 0

    @property
    def text(self) -> str:
        """The path as printable text, reversibly (base/names.py)."""
        return names.to_text(self.path)


@dataclass(frozen=True, slots=True)
class CollectCaps:
    """The settings' ``collect`` section (config/sections.py Collect), field for field."""

    files: int
    file_bytes: int
    total_bytes: int
    refusals_listed: int
    walk_entries: int
    time_s: float


KINDS = {stat.S_IFLNK: "a symbolic link (never followed)", stat.S_IFIFO: "a FIFO",
         stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def not_regular(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not taken, or None for a regular file."""
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFREG:
        return None
    return f"not a regular file: {KINDS.get(kind, 'of an unknown kind')}"


@dataclass
class Tally:
    """The caps as the walk spends them."""

    caps: CollectCaps
    files: int = 0
    bytes: int = 0

    def refusal(self, size: int) -> str | None:
        """Why a regular file of ``size`` bytes is not taken, or None (then ``take`` it)."""
        c = self.caps
        if self.files >= c.files:
            return f"over the cap of {c.files} files"
        if size > c.file_bytes:
            return f"{size} bytes, over the cap of {c.file_bytes} for one file"
        if self.bytes + size > c.total_bytes:
            return f"{size} bytes would take the total past the cap of {c.total_bytes}"
        return None

    def take(self, size: int) -> None:
        self.files += 1
        self.bytes += size


@dataclass
class Collection:
    """A job's collected files: the manifest's entries in the order found, refusals past the
    listed ones counted, the patterns that named nothing, and why the walk stopped early."""

    entries: list[Entry] = field(default_factory=list)
    unlisted_refusals: int = 0
    unmatched: tuple[str, ...] = ()
    stopped: str | None = None
    listed_cap: int = 100
    refused: int = 0  # the refusals listed among the entries

    def add(self, entry: Entry) -> None:
        if entry.status is Status.REFUSED:
            if self.refused >= self.listed_cap:
                self.unlisted_refusals += 1
                return
            self.refused += 1
        self.entries.append(entry)

    @property
    def collected(self) -> list[Entry]:
        return [e for e in self.entries if e.status is Status.COLLECTED]

    def summary(self) -> dict[str, Any]:
        """What the job's record says of its files (``jobs.files``)."""
        taken = self.collected
        out: dict[str, Any] = {
            "collected": len(taken), "bytes": sum(e.size or 0 for e in taken),
            "refused": self.refused + self.unlisted_refusals}
        if self.unlisted_refusals:
            out["refusals_not_listed"] = self.unlisted_refusals
        if self.unmatched:
            out["unmatched"] = list(self.unmatched)
        if self.stopped:
            out["stopped"] = self.stopped
        return out


def refused_all(patterns: Iterable[str], why: str) -> Collection:
    """Nothing collected, for a reason that holds for every pattern (said once)."""
    return Collection(unmatched=tuple(patterns), stopped=why)
