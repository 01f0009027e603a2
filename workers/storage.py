"""Bounded, fresh-per-container storage for /workspace, /opt/venv and /home/appuser.

``btrfs``: a subvolume per container under a quota group limited to the job's disk bound (the
default; the host set-up creates a loop-mounted btrfs where the backing filesystem lacks
quotas). ``tmpfs``: each mount is a sized tmpfs (bounded, but held in memory). A host that
cannot enforce the configured mode is refused, never silently unbounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import HostNotSafe, InfrastructureError
from workers.spec import JOB_MOUNTS

SUBDIRS = {"/workspace": "workspace", "/opt/venv": "venv", "/home/appuser": "home"}


@dataclass(frozen=True, slots=True)
class Volume:
    path: Path | None
    binds: Mapping[str, str]


def _btrfs(*args: str) -> str:
    try:
        done = subprocess.run(["btrfs", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(f"btrfs {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise InfrastructureError(f"btrfs {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class BtrfsVolumes:
    def __init__(self, root: str, uid: int, gid: int) -> None:
        self.root = Path(root)
        self.uid, self.gid = uid, gid

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

    def create(self, name: str, limit_bytes: int) -> Volume:
        path = self.root / name
        _btrfs("subvolume", "create", str(path))
        try:
            _btrfs("qgroup", "limit", str(limit_bytes), str(path))
            binds = {}
            for mount in JOB_MOUNTS:
                sub = path / SUBDIRS[mount]
                sub.mkdir(mode=0o700)
                os.chown(sub, self.uid, self.gid)
                binds[mount] = str(sub)
        except BaseException:
            self.destroy(Volume(path, {}))
            raise
        return Volume(path, binds)

    def usage(self, volume: Volume) -> int | None:
        """Referenced bytes of the subvolume's quota group."""
        if volume.path is None:
            return None
        try:
            out = _btrfs("qgroup", "show", "-f", "--raw", str(volume.path))
        except InfrastructureError:
            return None
        rows = [line.split() for line in out.splitlines() if line.startswith("0/")]
        return int(rows[-1][1]) if rows else None

    def destroy(self, volume: Volume) -> None:
        # Never walks the tree the job wrote: the subvolume goes as a whole, links and all.
        if volume.path is None or not volume.path.exists():
            return
        try:
            _btrfs("subvolume", "delete", str(volume.path))
        except InfrastructureError:
            # Subvolumes nested inside it (seccomp refuses the ioctl that makes them, but an
            # older profile may not) block the delete: remove them by id, children first.
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

    def create(self, name: str, limit_bytes: int) -> Volume:
        return Volume(None, {})

    def usage(self, volume: Volume) -> int | None:
        return None

    def destroy(self, volume: Volume) -> None:
        return None


def volumes_for(mode: str, root: str, uid: int, gid: int) -> BtrfsVolumes | TmpfsVolumes:
    return BtrfsVolumes(root, uid, gid) if mode == "btrfs" else TmpfsVolumes()
