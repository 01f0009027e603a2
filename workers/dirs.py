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
