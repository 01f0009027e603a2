"""A folder the worker works in, opened without following a link: each step after it is made
relative to the open folder (``dir_fd``), so nothing planted along its path redirects them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def opened(path: str | os.PathLike[str]) -> Iterator[int]:
    """The folder's fd, closed on the way out. Raises OSError (a link: ELOOP)."""
    fd = os.open(path, FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def found(path: str | os.PathLike[str]) -> dict[str, float]:
    """The folders in ``path`` by name, with their modification times (links not followed);
    empty when ``path`` is missing."""
    out: dict[str, float] = {}
    try:
        entries = list(os.scandir(path))
    except OSError:
        return out
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                out[entry.name] = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
    return out
