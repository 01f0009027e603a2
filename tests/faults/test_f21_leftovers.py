"""F21: what a container that vanished left beside it (its volume, FIFO and spool folders,
cgroup parent, uid slot) is swept by the reaper, by Airlock's names only: a worker killed
between making them and creating its container leaves exactly these, with no container for
the reaper's container sweep to find."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import docker
import pytest

from tasks.context import host_slots
from tests.faults.rig import Fleet, wait_for
from workers import cgroup, engine, pipes
from workers.runner import Beside
from workers.spool import Spool
from workers.storage import volumes_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
LONG_AGO_S = 600.0  # past the reaper's grace (workers/reaper.LEFTOVER_GRACE_S)


def plant(beside: Beside, name: str, disk_bytes: int) -> None:
    """Everything a container called ``name`` has beside it, as runner.prepare makes it."""
    pipes.make(pipes.folder(beside.io_dir, name)).close()
    Spool(beside.spool_dir, name).open().close()
    beside.volumes.create(name, disk_bytes, 2_000_000_999)
    for hierarchy in cgroup_dirs(name):
        hierarchy.mkdir(parents=True, exist_ok=True)


def cgroup_dirs(name: str) -> list[Path]:
    rel = cgroup.parent_for(name).strip("/")
    if cgroup.is_v2():
        return [cgroup.ROOT / rel]
    return [d / rel for d in cgroup.ROOT.iterdir() if d.is_dir() and (d / "tasks").exists()]


def present(beside: Beside, name: str) -> set[str]:
    where = {
        "io": Path(pipes.folder(beside.io_dir, name)).exists(),
        "spool": (Path(beside.spool_dir) / name).exists(),
        "volume": name in beside.volumes.found(),
        "cgroup": any(d.exists() for d in cgroup_dirs(name)),
        "slot": beside.slots is not None and name in {s.name for s in beside.slots.entries()},
    }
    return {k for k, v in where.items() if v}


def test_f21_side_resources_of_vanished_containers_are_swept_by_name(fleet: Fleet) -> None:
    s = fleet.settings
    fleet.worker()
    api = docker.APIClient(version="auto")
    try:
        engine_id = engine.engine_id(api)
    finally:
        api.close()
    slots = host_slots(s, engine_id)
    beside = Beside(volumes_for(s.storage, s.sandbox.volumes_root), s.sandbox.io_dir,
                    s.sandbox.spool_dir, slots)
    tag = uuid.uuid4().hex[:8]
    gone, recent, foreign, legacy = (f"airlock-{tag}-{n}" for n in (1, 2, 3, 4))
    now = time.time()
    # A worker that died long ago, on this engine, between making these and its container;
    slots.take(gone, now - LONG_AGO_S)
    plant(beside, gone, s.defaults.disk_bytes)
    # one that is making its container right now (its slot is fresh);
    slots.take(recent, now)
    plant(beside, recent, s.defaults.disk_bytes)
    # another engine's on the same host (never this reaper's, however old);
    host_slots(s, "another-engine-on-this-host").take(foreign, now - LONG_AGO_S)
    plant(beside, foreign, s.defaults.disk_bytes)
    # and folders from before the slots existed, left alone long ago.
    pipes.make(pipes.folder(beside.io_dir, legacy)).close()
    for folder in (pipes.folder(beside.io_dir, legacy),):
        os.utime(folder, (now - LONG_AGO_S, now - LONG_AGO_S))
    try:
        wait_for("the reaper to sweep the vanished container's resources",
                 lambda: not present(beside, gone) and not present(beside, legacy), 30)
        assert present(beside, recent) == {"io", "spool", "volume", "cgroup", "slot"}
        assert present(beside, foreign) == {"io", "spool", "volume", "cgroup", "slot"}
        # (swept by any reaper on this engine: in a full run, maybe the session's worker's)
    finally:
        for name in (gone, recent, foreign, legacy):
            Beside(beside.volumes, beside.io_dir, beside.spool_dir,
                   host_slots(s, "another-engine-on-this-host")).remove(name)
            beside.remove(name)
