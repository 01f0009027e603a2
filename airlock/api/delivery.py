"""How a stored file is answered over HTTP; pure. Which bytes (RFC 9110 ranges and
conditionals) and the headers that describe them: its checksum (``ETag`` and RFC 9530
``Repr-Digest``, both of the whole file, so also on a 206) and a download name that never
carries a raw control byte (RFC 6266 ``filename*``).

Ranges: one ``bytes=a-b``, ``a-`` or ``-n`` is 206; one that starts past the end (or ``-0``)
is 416 with ``Content-Range: bytes */size``. Anything else in ``Range`` (several ranges,
another unit, bad syntax) is ignored, as RFC 9110 allows: 200, the whole file.
``If-None-Match`` naming the file's tag is 304; ``If-Range`` not naming it drops the range.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import quote

ONE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 200, 206, 304 or 416
    start: int = 0
    end: int = 0  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def byte_range(header: str | None, size: int) -> Answer:
    """The answer to ``Range: header`` for a file of ``size`` bytes."""
    whole = Answer(200, 0, size)
    found = ONE_RANGE.match(header) if header is not None else None
    if found is None:
        return whole
    first, last = found.group(1), found.group(2)
    if not first and not last:
        return whole
    if not first:  # the last n bytes
        n = int(last)
        return Answer(206, max(0, size - n), size) if n > 0 and size > 0 else Answer(416)
    start = int(first)
    if last and int(last) < start:
        return whole  # invalid: ignored
    if start >= size:
        return Answer(416)
    return Answer(206, start, size if not last else min(size, int(last) + 1))


def etag(sha256: str) -> str:
    return f'"{sha256}"'


def _tags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def answer(size: int, sha256: str | None, range_: str | None, if_none_match: str | None,
           if_range: str | None) -> Answer:
    """The whole decision: 304 when the caller has this file, else the range (if still asked)."""
    tag = etag(sha256) if sha256 is not None else None
    if if_none_match is not None and tag is not None:
        tags = _tags(if_none_match)
        if "*" in tags or tag in tags:
            return Answer(304)
    if if_range is not None and (tag is None or if_range.strip() != tag):
        range_ = None  # a weak tag or a date never matches: the whole file, fresh
    return byte_range(range_, size)


def digest(sha256: str) -> str:
    """RFC 9530: ``sha-256=:<base64 of the digest>:``."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256)).decode()}:"


def disposition(path: str) -> str:
    """``attachment`` with the path's last part as the name: an ASCII stand-in (anything but
    printable ASCII, quotes, backslashes and percent signs as ``_``), and the name exactly,
    percent-encoded UTF-8 (RFC 8187)."""
    name = path.rsplit("/", 1)[-1] or "file"
    plain = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    exact = quote(name, safe="", encoding="utf-8", errors="backslashreplace")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}"


def headers(path: str, size: int, sha256: str | None, chosen: Answer) -> dict[str, str]:
    """The headers of a 200 or 206 (or, minus the body's, a 304 or 416)."""
    out = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-cache",
           "X-Content-Type-Options": "nosniff"}
    if sha256 is not None:
        out |= {"ETag": etag(sha256), "Repr-Digest": digest(sha256)}
    if chosen.status == 416:
        return out | {"Content-Range": f"bytes */{size}"}
    if chosen.status == 304:
        return out
    out |= {"Content-Length": str(chosen.length), "Content-Disposition": disposition(path)}
    if chosen.status == 206:
        out["Content-Range"] = f"bytes {chosen.start}-{chosen.end - 1}/{size}"
    return out
