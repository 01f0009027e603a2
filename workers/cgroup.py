"""Usage counters read from the host's cgroup files (v1 and v2), without Docker's stats API.

Each job container runs under a cgroup parent of its own. Docker removes the container's
cgroup when it stops, but the parent survives it and still holds the peak memory and the
CPU time charged below it, so the figures are exact and read after the job ended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_ms: int | None
    peak_memory_bytes: int | None
    # The parent's high-water mark of processes (pids.peak, kernel 6.1+); unlike the
    # container's own pids.events it survives the container, so a cap hit just before
    # exit is still seen. It counts runc's init threads too (about 6 at start).
    pids_peak: int | None = None
    # v2 counts a refused fork in every ancestor's pids.events; v1 only in the leaf.
    pids_max_events: int = 0


def is_v2(root: Path = ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split() for line in lines)
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def usage(parent: str, root: Path = ROOT) -> Usage:
    rel = parent.strip("/")
    if is_v2(root):
        cpu = _read_keyed(root / rel / "cpu.stat").get("usage_usec")
        return Usage(
            cpu_ms=None if cpu is None else cpu // 1000,
            peak_memory_bytes=_read_int(root / rel / "memory.peak"),
            pids_peak=_read_int(root / rel / "pids.peak"),
            pids_max_events=_read_keyed(root / rel / "pids.events").get("max", 0),
        )
    cpu_ns = _read_int(root / "cpuacct" / rel / "cpuacct.usage")
    return Usage(
        cpu_ms=None if cpu_ns is None else cpu_ns // 1_000_000,
        peak_memory_bytes=_read_int(root / "memory" / rel / "memory.max_usage_in_bytes"),
        pids_peak=_read_int(root / "pids" / rel / "pids.peak"),
    )


def pids_max_events(parent: str, container_id: str, root: Path = ROOT) -> int:
    """How often a fork failed on the container's pids limit (0 once the cgroup is gone:
    Docker removes it when the container stops, so the runner polls it while it runs).
    With the cgroupfs driver the leaf is <controller>/<cgroup parent>/<container id>."""
    rel = parent.strip("/")
    base = root / rel if is_v2(root) else root / "pids" / rel
    return _read_keyed(base / container_id / "pids.events").get("max", 0)


PARENTS = "airlock"  # the folder of every container's cgroup parent, in each hierarchy


def parent_names(root: Path = ROOT) -> dict[str, float]:
    """Every container's cgroup parent there is, by name, with its newest change (any
    hierarchy): the reaper's view of what may be left behind."""
    tops = [root / PARENTS] if is_v2(root) else [d / PARENTS for d in root.iterdir() if d.is_dir()]
    found: dict[str, float] = {}
    for top in tops:
        try:
            entries = list(top.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    found[entry.name] = max(found.get(entry.name, 0.0), entry.stat().st_mtime)
            except OSError:
                continue
    return found


def parent_for(name: str) -> str:
    """The cgroup parent of the container (and volume, and FIFO folder) called ``name``."""
    return f"/{PARENTS}/{name}"


def remove_parent(parent: str, root: Path = ROOT) -> None:
    """Remove the (now empty) per-container parent cgroup in every hierarchy."""
    rel = parent.strip("/")
    dirs = [root / rel] if is_v2(root) else [d / rel for d in root.iterdir() if d.is_dir()]
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            pass


def oom_kills(parent: str, container_id: str, root: Path = ROOT) -> int:
    """OOM kills in the container's memory cgroup (v1: the leaf's memory.oom_control, gone once
    the container stops; v2: memory.events, hierarchical, so the surviving parent counts too)."""
    rel = parent.strip("/")
    if is_v2(root):
        return max(_read_keyed(root / rel / "memory.events").get("oom_kill", 0),
                   _read_keyed(root / rel / container_id / "memory.events").get("oom_kill", 0))
    return _read_keyed(root / "memory" / rel / container_id / "memory.oom_control").get("oom_kill", 0)

