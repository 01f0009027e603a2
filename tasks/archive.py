"""A job's tar archive (``archive_b64``), checked and read into files for /workspace; pure.

Plain tar, or gzip-compressed tar (inflated to a bound first: a small bomb never becomes a
large buffer). Members are regular files and folders only: a symbolic or hard link, a
device, a FIFO is refused naming the member, as is an absolute name, a ``..`` part, a name
that is not UTF-8 or holds a control character, a member over the cap on one file, or
members that together pass the count or the total. A leading ``./`` is dropped (``tar -C
dir .`` writes one). Folders are made as their files need them; an empty folder is not made.
A member with any execute bit becomes an executable file (0755); every other file is 0644.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass

from base.errors import JobSpecError, preview

FIELD = "archive_b64"
GZIP_MAGIC = b"\x1f\x8b"
EXEC_BITS = 0o111
# A tar is its files' bytes plus a 512-byte header each (more with a long name's pax
# header) and its end: the bound on what gzip may inflate to, for the caps given.
HEADER_ALLOWANCE = 3 * 512


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    data: bytes
    executable: bool


def read(data: bytes, *, count: int, each: int, total: int) -> list[Member]:
    """The archive's files, or a JobSpecError naming the member (or the archive)."""
    raw = _inflated(data, total + (count + 2) * HEADER_ALLOWANCE + 1024 * 1024)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            return _members(tar, count=count, each=each, total=total)
    except JobSpecError:
        raise
    except (tarfile.TarError, EOFError, ValueError, OSError, UnicodeError) as exc:
        raise JobSpecError(FIELD, f"is not a tar archive ({type(exc).__name__})") from exc


def _inflated(data: bytes, bound: int) -> bytes:
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(data, bound)
    except zlib.error as exc:
        raise JobSpecError(FIELD, "is not valid gzip") from exc
    if inflater.unconsumed_tail:
        raise JobSpecError(FIELD, f"inflates past {bound} bytes (the files' caps)")
    if not inflater.eof:
        raise JobSpecError(FIELD, "is gzip cut short")
    return raw


def member_name(name: str) -> str:
    """The path a member's name stands for under /workspace, or a JobSpecError."""
    if any(ord(c) < 32 or ord(c) == 127 or 0xDC80 <= ord(c) <= 0xDCFF for c in name):
        raise _refused(name, "has a name that is not UTF-8 text or holds a control character")
    if name.startswith("/"):
        raise _refused(name, "has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refused(name, "goes up ('..')")
    if any(len(p.encode()) > 255 for p in parts):
        raise _refused(name, "has a part over 255 bytes")
    return "/".join(parts)


def _refused(name: str, why: str) -> JobSpecError:
    """A refusal naming the member (its name escaped: it may hold anything)."""
    return JobSpecError(FIELD, f"member '{preview(name, 100)}' {why}")


KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
         tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
         tarfile.FIFOTYPE: "a FIFO"}


def _members(tar: tarfile.TarFile, *, count: int, each: int, total: int) -> list[Member]:
    out: list[Member] = []
    seen: set[str] = set()
    size = 0
    for info in tar:
        name = member_name(info.name)
        if info.isdir():
            continue
        if not info.isreg():
            raise _refused(info.name, f"is {KINDS.get(info.type, 'not a regular file')}: only"
                                      " files and folders are unpacked")
        if not name or name in seen:
            raise _refused(info.name, "names no file" if not name else "appears twice")
        if info.size > each:
            raise _refused(info.name, f"is {info.size} bytes, over the cap of {each} for one file")
        size += info.size
        if size > total:
            raise _refused(info.name, f"takes the files past the cap of {total} bytes")
        if len(out) >= count:
            raise _refused(info.name, f"is past the cap of {count} files")
        seen.add(name)
        member = tar.extractfile(info)
        content = member.read() if member is not None else b""
        out.append(Member(name, content, bool(info.mode & EXEC_BITS)))
    return out
