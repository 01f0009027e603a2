"""F13: container removal fails, and races with the reaper: retried; nothing crashes.

A real removal failure: an immutable file (chattr +i) planted in the container's writable
layer makes the engine fail to delete its root filesystem ("operation not permitted"), the
container stays in "removal in progress" until the flag is lifted. Then the worker's reaper and
four sweeps in the test process race to remove it.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import docker
import pytest

from tasks import maintenance
from tasks.store import JobStore, make_engine
from tests.faults.rig import ENGINE1, Fleet, wait_for
from workers.runner import remove_container
from workers.storage import volumes_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_f13_removal_fails_then_races_with_the_reaper(fleet: Fleet) -> None:
    w = fleet.worker()
    api = docker.APIClient(base_url=ENGINE1, version="auto")
    stuck: Path | None = None
    try:
        job = fleet.submit("import time; time.sleep(1.5); print('done')")
        cid = fleet.running_container(job)
        upper = Path(api.inspect_container(cid)["GraphDriver"]["Data"]["UpperDir"])
        stuck = upper / "airlock-f13-immutable"
        stuck.touch()
        subprocess.run(["chattr", "+i", str(stuck)], check=True)

        record = fleet.wait(job, 30)
        assert (record.verdict, record.stdout) == ("ok", "done\n")  # the job is not at fault
        wait_for("the worker's three tries and a reaper sweep",
                 lambda: w.log().count("container.remove_failed") >= 4, 15)
        assert w.proc is not None and w.proc.poll() is None  # nothing crashed
        assert [c["Id"] for c in fleet.leftovers()] == [cid]  # still there, reaper retries
        assert fleet.attempts(job)[0].container_removed_at is None

        subprocess.run(["chattr", "-i", str(stuck)], check=True)
        stuck = None
        s = fleet.settings
        store = JobStore(make_engine(s.database_url))
        volumes = volumes_for(s.storage, s.sandbox.volumes_root)
        errors: list[BaseException] = []

        def sweep() -> None:
            try:
                maintenance.sweep(api, store, s, volumes)
                remove_container(api, cid)
            except BaseException as exc:  # the point is that nothing raises
                errors.append(exc)

        racers = [threading.Thread(target=sweep) for _ in range(4)]
        for t in racers:
            t.start()
        for t in racers:
            t.join(30)
        store.engine.dispose()
        assert not errors, errors
        wait_for("the container to be gone", lambda: not fleet.leftovers(), 15)
        wait_for("its removal recorded",
                 lambda: fleet.attempts(job)[0].container_removed_at is not None, 15)
        canary = fleet.wait(fleet.submit("print('canary ok')"), 30)
        assert canary.verdict == "ok"
    finally:
        if stuck is not None:
            subprocess.run(["chattr", "-i", str(stuck)], check=False)
        api.close()
