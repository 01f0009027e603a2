"""Writing a job's collected files into a folder of the caller's, never outside it.

A stored name is never trusted as a path (it came from the job, and through a database):
``local_path`` keeps it only as text ``base/names.py`` could have written (printable, each
part a real name, not ``.`` or ``..``), shortens a part too long for a file system, and
otherwise names the file ``file-<n>``. ``save`` then makes each folder and file below the
folder's fd, one name at a time, with O_NOFOLLOW and O_EXCL: never through a link that is
there, never over a file that is there. Every file's sha256 is checked as it is written; a
mismatch removes the file. Modes: 0644, or 0755 when the job's file was executable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from base import names
from base.errors import AirlockError
from tasks.output_rows import FileRow

NAME_MAX = 255
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _short(part: str) -> str:
    raw = part.encode()
    if len(raw) <= NAME_MAX:
        return part
    tag = "~" + hashlib.sha256(raw).hexdigest()[:12]
    head = raw[:NAME_MAX - len(tag)].decode("utf-8", "ignore")
    return head + tag


def local_path(row: FileRow) -> tuple[str, ...]:
    """The parts of the path to write ``row``'s file at, below the caller's folder."""
    fallback = (f"file-{row.n}",)
    try:
        names.from_text(row.path)
    except ValueError:
        return fallback
    parts = row.path.split("/")
    if not row.path.isprintable() or any(p in ("", ".", "..") for p in parts):
        return fallback
    return tuple(_short(p) for p in parts)


@dataclass(frozen=True, slots=True)
class Saved:
    row: FileRow
    local: str  # relative to the folder
    problem: str | None = None  # why it was not written (then nothing is left of it)


def save(folder: Path, rows: Iterable[FileRow],
         read: Callable[[FileRow], Iterator[bytes]]) -> list[Saved]:
    """Write each collected file of ``rows`` (refused ones are skipped) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    root = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for row in rows:
            if row.status != "collected":
                continue
            parts = local_path(row)
            try:
                _write(root, parts, row, read(row))
                out.append(Saved(row, "/".join(parts)))
            except (OSError, AirlockError) as exc:
                out.append(Saved(row, "/".join(parts), str(exc)))
    finally:
        os.close(root)
    return out


def _write(root: int, parts: tuple[str, ...], row: FileRow, chunks: Iterator[bytes]) -> None:
    dir_fd = root
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o755, dir_fd=dir_fd)
            except FileExistsError:
                pass
            inner = os.open(part, DIR_FLAGS, dir_fd=dir_fd)
            if dir_fd != root:
                os.close(dir_fd)
            dir_fd = inner
        _write_file(dir_fd, parts[-1], row, chunks)
    finally:
        if dir_fd != root:
            os.close(dir_fd)


def _write_file(dir_fd: int, name: str, row: FileRow, chunks: Iterator[bytes]) -> None:
    mode = 0o755 if (row.mode or 0) & 0o111 else 0o644
    fd = os.open(name, NEW_FILE, mode, dir_fd=dir_fd)
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fchmod(fd, mode)  # whatever the umask
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)
    if size != row.size or (row.sha256 is not None and digest.hexdigest() != row.sha256):
        os.unlink(name, dir_fd=dir_fd)
        raise AirlockError(f"{row.path}: the bytes read do not match the stored size and"
                           " sha256; not written")
