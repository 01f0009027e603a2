"""Bounded, fresh-per-container storage for /workspace, /opt/venv and /home/appuser.

``btrfs``: a subvolume per container under a quota group limited to the job's disk bound (the
default; the host set-up creates a loop-mounted btrfs where the backing filesystem lacks
quotas). ``tmpfs``: each mount is a sized tmpfs (bounded, but held in memory). A host that
cannot enforce the configured mode is refused, never silently unbounded.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from base.errors import HostNotSafe, InfrastructureError
from workers import btrfs, dirs
from workers.spec import JOB_MOUNTS

SUBDIRS = {"/workspace": "workspace", "/opt/venv": "venv", "/home/appuser": "home"}


@dataclass(frozen=True, slots=True)
class Volume:
    path: Path | None
    binds: Mapping[str, str]
    subvol_id: int | None = None  # btrfs: its quota group is 0/<subvol_id>


class Volumes(Protocol):
    """Where each container's /workspace, /opt/venv and home live, bounded by its disk limit."""

    def check(self) -> None:
        """Raise HostNotSafe unless the bound can be enforced here."""

    def named(self, name: str) -> Volume:
        """The volume of the container called ``name`` (to destroy; its binds not needed)."""

    def found(self) -> dict[str, float]:
        """The volumes on disk, by name, with when each last changed (the reaper's sweep)."""

    def create(self, name: str, limit_bytes: int, uid: int) -> Volume:
        """A fresh volume under its bound, its folders owned by ``uid`` (and gid ``uid``)."""

    def usage(self, volume: Volume) -> int | None: ...

    def destroy(self, volume: Volume) -> None: ...


def _btrfs(*args: str) -> str:
    try:
        done = subprocess.run(["btrfs", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(f"btrfs {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise InfrastructureError(f"btrfs {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class BtrfsVolumes:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self._fsid: str | None = None  # the filesystem's UUID, its folder in sysfs

    def check(self) -> None:
        """Fail closed unless the root is btrfs with quotas enabled."""
        if shutil.which("btrfs") is None:
            raise HostNotSafe("disk bound: btrfs-progs is not installed (run scripts/setup-host.sh)")
        try:
            _btrfs("qgroup", "show", str(self.root))
        except InfrastructureError as exc:
            raise HostNotSafe(
                f"disk bound: {self.root} is not a btrfs filesystem with quotas enabled ({exc});"
                " run scripts/setup-host.sh or set AIRLOCK_STORAGE=tmpfs"
            ) from exc

    def named(self, name: str) -> Volume:
        return Volume(self.root / name, {})

    def found(self) -> dict[str, float]:
        return dirs.found(self.root)

    def create(self, name: str, limit_bytes: int, uid: int) -> Volume:
        """A fresh subvolume under its own quota, with the job's three folders in it."""
        path = self.root / name
        try:
            with dirs.opened(self.root) as root_fd:
                if self._fsid is None:
                    self._fsid = btrfs.filesystem_id(root_fd)
                btrfs.create_subvolume(root_fd, name)
        except (OSError, ValueError) as exc:
            raise InfrastructureError(f"btrfs subvolume create {path}: {exc}") from exc
        try:
            with dirs.opened(path) as fd:
                btrfs.limit_referenced(fd, limit_bytes)
                subvol_id = btrfs.subvolume_id(fd)
                binds = {}
                for mount in JOB_MOUNTS:
                    sub = SUBDIRS[mount]
                    os.mkdir(sub, 0o700, dir_fd=fd)
                    os.chown(sub, uid, uid, dir_fd=fd, follow_symlinks=False)
                    binds[mount] = str(path / sub)
        except BaseException as exc:
            self.destroy(Volume(path, {}))
            if isinstance(exc, OSError):
                raise InfrastructureError(f"btrfs volume {path}: {exc}") from exc
            raise
        return Volume(path, binds, subvol_id)

    def usage(self, volume: Volume) -> int | None:
        """Referenced bytes of the subvolume's quota group (as of the last commit)."""
        if volume.path is None:
            return None
        if volume.subvol_id is not None and self._fsid is not None:
            found = btrfs.referenced(self._fsid, volume.subvol_id)
            if found is not None:
                return found
        try:  # a kernel without qgroups in sysfs (before 5.9)
            out = _btrfs("qgroup", "show", "-f", "--raw", str(volume.path))
        except InfrastructureError:
            return None
        rows = [line.split() for line in out.splitlines() if line.startswith("0/")]
        return int(rows[-1][1]) if rows else None

    def destroy(self, volume: Volume) -> None:
        # Never walks the tree the job wrote: the subvolume goes as a whole, links and all.
        if volume.path is None or not volume.path.exists():
            return
        if volume.path.parent == self.root:
            try:
                with dirs.opened(self.root) as root_fd:
                    btrfs.delete_subvolume(root_fd, volume.path.name)
                return
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise InfrastructureError(f"btrfs subvolume delete {volume.path}: {exc}") from exc
        # Subvolumes nested inside it (seccomp refuses the ioctl that makes them, but an
        # older profile may not) block the delete: remove them by id, children first.
        try:
            _btrfs("subvolume", "delete", str(volume.path))
        except InfrastructureError:
            nested = nested_subvolumes(_btrfs("subvolume", "list", "-p", str(self.root)),
                                       int(_btrfs("inspect-internal", "rootid", str(volume.path))))
            for subvol_id in nested:
                _btrfs("subvolume", "delete", "--subvolid", str(subvol_id), str(self.root))
            _btrfs("subvolume", "delete", str(volume.path))


def nested_subvolumes(listing: str, top: int) -> list[int]:
    """Ids of the subvolumes below ``top``, deepest first, from ``btrfs subvolume list -p``."""
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        words = line.split()
        if len(words) >= 6 and words[0] == "ID" and words[4] == "parent":
            children.setdefault(int(words[5]), []).append(int(words[1]))
    order: list[int] = []

    def visit(node: int) -> None:
        for child in children.get(node, []):
            if child not in order:
                visit(child)
                order.append(child)

    visit(top)
    return order


class TmpfsVolumes:
    def check(self) -> None:
        return None

    def named(self, name: str) -> Volume:
        return Volume(None, {})

    def found(self) -> dict[str, float]:
        return {}

    def create(self, name: str, limit_bytes: int, uid: int) -> Volume:
        return Volume(None, {})

    def usage(self, volume: Volume) -> int | None:
        return None

    def destroy(self, volume: Volume) -> None:
        return None


def volumes_for(mode: str, root: str) -> Volumes:
    return BtrfsVolumes(root) if mode == "btrfs" else TmpfsVolumes()
