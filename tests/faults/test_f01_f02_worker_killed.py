"""F1, F2: SIGKILL of a worker's main process, and of the pool process running the job."""

from __future__ import annotations

import os
import signal
import time

import docker
import psutil
import pytest

from tests.faults.rig import ENGINE1, EventLog, Fleet, overlaps, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def until(seconds: float) -> str:
    """A job that runs until a moment on the host's clock: an orphaned first attempt is still
    running when the reaper comes, and the second attempt only waits out what is left."""
    return f"import time; time.sleep(max(0, {time.time() + seconds} - time.time())); print('done')"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def container_state(cid: str) -> str:
    """"running", "exited" (not removed yet) or "" (gone)."""
    api = docker.APIClient(base_url=ENGINE1, version="auto")
    try:
        return str(api.inspect_container(cid)["State"]["Status"])
    except docker.errors.NotFound:
        return ""
    finally:
        api.close()


def test_f1_sigkill_of_the_main_process_mid_job(fleet: Fleet) -> None:
    events = EventLog(fleet.settings.fleet).start()
    try:
        w1 = fleet.worker("w1")
        job = fleet.submit(until(8), timeout_s=30)
        orphan = fleet.running_container(job)
        children = w1.pool_pids()
        w1.kill()  # the main process only
        # Celery's process_initializer sets PR_SET_PDEATHSIG=SIGKILL on every pool process:
        # they die with their parent, mid-job, without running any clean-up.
        wait_for("the pool processes to die with their parent",
                 lambda: not any(alive(p) for p in children), 5)
        # What is left: a running container nobody feeds or watches, a message the broker
        # holds as delivered (only the visibility timeout would restore it), a running row.
        assert container_state(orphan) == "running"
        assert fleet.broker_holds(job) == "unacked"
        assert fleet.record(job).status == "running"

        fleet.expire_lease(job)  # time passes: nobody renewed the lease
        w2 = fleet.worker("w2")  # its first sweep runs before it says ready
        assert "reaper.removed" in w2.log() and "lease_expired" in w2.log()
        assert container_state(orphan) == ""

        record = fleet.wait(job, 60)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 2)
        assert [a.outcome for a in fleet.attempts(job)] == ["lost", "finished"]
        assert fleet.end_events(job) == 1
        assert len(fleet.created(job, events)) == 2
        assert not overlaps(fleet.run_intervals(job, events))
        assert not fleet.leftovers()
        # F21: nor anything beside the orphan (its volume, folders, cgroup parent, uid)
        wait_for("the orphan's side resources to go", lambda: not fleet.side_leftovers(events), 10)
    finally:
        events.close()


def test_f2_sigkill_of_the_pool_process_running_the_job(fleet: Fleet) -> None:
    events = EventLog(fleet.settings.fleet).start()
    try:
        w = fleet.worker()
        job = fleet.submit(until(4), timeout_s=30)
        first = fleet.running_container(job)
        [child] = w.pool_pids()
        os.kill(child, signal.SIGKILL)
        # Celery sees WorkerLostError and, with reject_on_worker_lost, requeues the message;
        # the redelivery cannot claim the job (the attempt's lease still holds: its container
        # may be running) and leaves without a container.
        wait_for("the redelivery to be turned away", lambda: "job.not_claimed" in w.log(), 20)
        assert len(fleet.created(job, events)) == 1 and container_state(first)  # left to the reaper

        fleet.expire_lease(job)  # time passes; the reaper (every second) takes it from here
        record = fleet.wait(job, 60)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 2)
        assert [a.outcome for a in fleet.attempts(job)] == ["lost", "finished"]
        assert "lease_expired" in w.log()
        assert fleet.end_events(job) == 1
        assert len(fleet.created(job, events)) == 2
        assert not overlaps(fleet.run_intervals(job, events))
        assert alive(w.pid) and not fleet.leftovers()
        wait_for("the orphan's side resources to go", lambda: not fleet.side_leftovers(events), 10)
    finally:
        events.close()
