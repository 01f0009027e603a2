"""F4: Celery's hard time limit fires: the container does not outlive it; the job ends.

The job's own timeout, the container's deadline (its launcher kills everything backstop_s
after the job's timeout) and the soft limit all come first (F0), so the hard limit only fires
when the pool process itself is stuck. That is what the test does to it: SIGSTOP, once the
job is running. The limits are made small for this test's worker.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest

from tests.faults.rig import EventLog, Fleet, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_f4_hard_time_limit_ends_the_job_and_no_container_outlives_it(fleet: Fleet) -> None:
    # The longest job allowed is the preflight canaries' 20 s (tasks/preflight.py runs them
    # at start with that timeout); everything else is as short as it goes.
    s = fleet.configure(
        defaults={"timeout_s": 1.0}, maximums=replace(fleet.settings.maximums, timeout_s=20.0),
        startup_grace_s=2.0, backstop_s=1.0, soft_margin_s=1.0, hard_margin_s=1.0)
    assert (s.container_deadline_s, s.soft_time_limit_s, s.hard_time_limit_s) == (23, 24, 25)
    events = EventLog(s.fleet).start()
    try:
        w = fleet.worker()
        job = fleet.submit("import time; print('running', flush=True); time.sleep(600)",
                           timeout_s=2)
        cid = fleet.running_container(job)
        wait_for("the job to print", lambda: b"running" in b"".join(
            f.get(b"d", b"") for _, f in fleet.client.redis.xrange(f"airlock:out:{job}")), 10)
        [stuck] = w.pool_pids()
        os.kill(stuck, signal.SIGSTOP)  # the pool process hangs, mid-job

        record = fleet.wait(job, 45)
        assert record.verdict == "error" and "hard time limit" in (record.error or ""), record
        assert "Hard time limit" in w.log()
        wait_for("the stuck pool process to be killed", lambda: stuck not in w.pool_pids(), 10)
        # The container died at its own deadline, before the hard limit fired.
        died = [e.time for e in events.events if e.id == cid and e.action == "die"]
        assert died and record.finished_at is not None
        assert died[0] < record.finished_at.timestamp(), (died, record.finished_at)
        wait_for("the reaper to remove it", lambda: not fleet.leftovers(), 15)
        assert len(fleet.created(job, events)) == 1  # not retried
        canary = fleet.wait(fleet.submit("print('canary ok')", timeout_s=1), 30)
        assert canary.verdict == "ok", canary
    finally:
        events.close()
