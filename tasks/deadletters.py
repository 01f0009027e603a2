"""Dead letters: what a worker took off the broker and could not take as a job, kept for a person.

One Redis list per place the item came from, ``airlock:dead:<queue>`` (or ``…:unacked``, for an
entry of kombu's unacknowledged hash), newest first, each item one JSON object: when (``at``),
where (``queue``), why (``reason``), the item's size, and its first ``PAYLOAD_BYTES`` bytes
(``payload_b64``). A list keeps its newest ``KEEP`` items: whoever can write to the broker can
fill it, never beyond that.

Whatever is shown of an item (the log line, ``airlock dead-letters``) goes through ``escaped``:
printable ASCII, everything else as ``\\xNN``, so no byte of it reaches a terminal raw.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
import structlog

log = structlog.get_logger(__name__)
PREFIX = "airlock:dead:"
KEEP = 1000  # items per list
PAYLOAD_BYTES = 16 * 1024  # kept of each item
PREVIEW_BYTES = 96  # of an item, in a log line or a listing
_UNPRINTABLE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")  # all but printable ASCII, less the backslash


def dead_key(queue: str) -> str:
    return f"{PREFIX}{queue}"


def escaped(data: bytes | str, limit: int | None = None) -> str:
    """``data`` (its first ``limit`` bytes) as printable ASCII: a backslash doubled, every other
    byte outside printable ASCII as ``\\xNN`` (text is escaped as UTF-8), "..." when cut."""
    raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    cut = limit is not None and len(raw) > limit
    shown = _UNPRINTABLE.sub(lambda m: b"\\\\" if m[0] == b"\\" else b"\\x%02x" % m[0][0],
                             raw[:limit] if cut else raw)
    return shown.decode("ascii") + ("..." if cut else "")


def printable(text: str) -> str:
    """``text`` as it is when printable ASCII (as the reasons this module writes), else escaped:
    anyone who can write to the broker can write an entry."""
    return text if text.isascii() and text.isprintable() else escaped(text)


def because(what: str, exc: BaseException) -> str:
    """A reason naming the error, whose text (the item's own words, maybe) is escaped and cut."""
    return f"{what} ({type(exc).__name__}: {escaped(str(exc), 120)})"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    at: float
    queue: str
    reason: str
    size: int  # of the whole item
    payload: bytes  # its first PAYLOAD_BYTES

    @classmethod
    def of(cls, queue: str, raw: bytes, reason: str, at: float) -> DeadLetter:
        return cls(at, queue, reason, len(raw), raw[:PAYLOAD_BYTES])

    @property
    def truncated(self) -> bool:
        return self.size > len(self.payload)

    def preview(self) -> str:
        return escaped(self.payload, PREVIEW_BYTES)

    def as_dict(self) -> dict[str, object]:
        return {"at": self.at, "queue": printable(self.queue), "reason": printable(self.reason),
                "size": self.size, "truncated": self.truncated, "preview": self.preview(),
                "payload_b64": base64.b64encode(self.payload).decode()}

    def describe(self) -> str:
        """One line: when (UTC), why, how big, and the item's head, all printable ASCII."""
        when = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return f"{when}  {printable(self.reason)}  {self.size} B  {self.preview()}"

    def to_json(self) -> str:
        return json.dumps({"at": self.at, "queue": self.queue, "reason": self.reason,
                           "size": self.size, "payload_b64": base64.b64encode(self.payload).decode()})

    @classmethod
    def from_json(cls, item: bytes | str) -> DeadLetter | None:
        """The entry, or None when it is not one of ours (the list is writable by others)."""
        try:
            d = json.loads(item)
            return cls(float(d["at"]), str(d["queue"]), str(d["reason"]), int(d["size"]),
                       base64.b64decode(d["payload_b64"], validate=True))
        except (ValueError, KeyError, TypeError, RecursionError):
            return None


def keep(r: redis.Redis | None, letter: DeadLetter, **context: str) -> None:
    """Add the item to its list, trimmed to ``KEEP``, then log it (with ``context``, e.g. its
    task id); with no Redis to write to, only log it. Never raises: an item that cannot be kept
    is still skipped, and the log line says what it was."""
    error = "" if r is not None else "no broker to write to"
    if r is not None:
        key = dead_key(letter.queue)
        try:
            with r.pipeline(transaction=True) as pipe:
                pipe.lpush(key, letter.to_json())
                pipe.ltrim(key, 0, KEEP - 1)
                pipe.execute()
        except redis.exceptions.RedisError as exc:
            error = str(exc)
    log.warning("broker.set_aside", queue=letter.queue, reason=letter.reason, size=letter.size,
                preview=letter.preview(), kept=not error, error=error or None, **context)


def dead_letters(r: redis.Redis, queue: str, count: int = KEEP) -> list[DeadLetter | None]:
    """The newest ``count`` items of the queue's list, newest first (None: not an entry of ours)."""
    return [DeadLetter.from_json(item) for item in r.lrange(dead_key(queue), 0, count - 1)]


def dead_queues(r: redis.Redis) -> list[str]:
    """The places that have a dead-letter list, by name."""
    keys = r.scan_iter(match=f"{PREFIX}*", count=500)
    return sorted({(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k))
                   .removeprefix(PREFIX) for k in keys})
