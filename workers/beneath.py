"""Opening a path below a folder the job wrote, never through a link at any component.

``openat2`` (Linux 5.6+) with RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_NO_MAGICLINKS and
RESOLVE_NO_XDEV: the kernel refuses (ELOOP, EXDEV) a symbolic link, a /proc magic link, a
mount crossing or a ``..`` leaving the folder, anywhere along the path. Where the syscall is
missing (or a seccomp profile refuses it), the same walk in user space: one component at a
time from the folder's fd, each opened with O_NOFOLLOW (a folder also with O_DIRECTORY).
Python has no ``os.openat2``: it is called through libc's ``syscall``.
"""

from __future__ import annotations

import ctypes
import errno
import os

SYS_OPENAT2 = 437  # the same number on x86-64 and arm64 (the generic table)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A FIFO opened for reading without O_NONBLOCK waits for a writer: never block on one.
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_available: bool | None = None  # None: not tried yet


def open_beneath(root_fd: int, path: bytes, flags: int) -> int:
    """An fd of ``path`` (relative, components joined by ``/``) below the folder ``root_fd``.
    Raises OSError: ELOOP for a link at any component, ENOTDIR, ENOENT, EXDEV, ..."""
    global _available
    if not path or path.startswith(b"/") or b"\0" in path:
        raise OSError(errno.EINVAL, "not a relative path", path)
    if _available is None:
        _available = _probe(root_fd)
    if not _available:
        return _walk(root_fd, path, flags)
    fd = _openat2(root_fd, path, flags)
    if fd < 0:
        err = -fd
        raise OSError(err, os.strerror(err), path)
    return fd


def _openat2(root_fd: int, path: bytes, flags: int) -> int:
    """The fd, or minus the errno."""
    how = _OpenHow(flags, 0, RESOLVE)
    fd = int(_libc.syscall(SYS_OPENAT2, root_fd, ctypes.c_char_p(path), ctypes.byref(how),
                           ctypes.sizeof(how)))
    return fd if fd >= 0 else -ctypes.get_errno()


def _probe(root_fd: int) -> bool:
    """Whether openat2 is there: not on a kernel before 5.6, nor under a seccomp profile that
    predates it (ENOSYS or EPERM for the folder itself, which any open may read)."""
    fd = _openat2(root_fd, b".", DIR_FLAGS)
    if fd >= 0:
        os.close(fd)
        return True
    return -fd not in (errno.ENOSYS, errno.EPERM)


def _walk(root_fd: int, path: bytes, flags: int) -> int:
    parts = path.split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        raise OSError(errno.EXDEV, "not a path below the folder", path)
    fd = root_fd
    try:
        for part in parts[:-1]:
            inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = inner
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        if fd != root_fd:
            os.close(fd)


def use_openat2(on: bool | None) -> None:
    """For tests: force the user-space walk (False), or try the syscall again (None)."""
    global _available
    _available = on
