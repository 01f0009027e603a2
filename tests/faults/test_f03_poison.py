"""F3: a poison job, one whose every attempt kills the worker process running it.

How it is simulated, honestly: a job cannot reach its worker from inside the sandbox (that is
the point of the sandbox), so what kills a pool process in real life (a crash in a library
while handling the job's output, the kernel's OOM killer picking the worker, a bug) is played
by the test: each time an attempt of this job has its container running, the test SIGKILLs
the pool process running it (concurrency 1: the only one). No hook in the product's code.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.rig import EventLog, Fleet, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_f3_a_job_that_kills_its_worker_every_time_ends_as_failed(fleet: Fleet) -> None:
    events = EventLog(fleet.settings.fleet).start()
    try:
        w = fleet.worker()
        cap = fleet.settings.timeouts.max_attempts
        job = fleet.submit("import time; time.sleep(60)", timeout_s=90)
        for attempt in range(1, cap + 1):
            fleet.running_container(job, attempt)
            [pool_process] = w.pool_pids()
            os.kill(pool_process, signal.SIGKILL)
            wait_for("the pool process to be replaced",
                     lambda p=pool_process: w.pool_pids() and p not in w.pool_pids(), 20)
            fleet.expire_lease(job)  # time passes; the reaper releases the job
        record = fleet.wait(job, 60)
        assert record.status == "finished" and record.verdict == "error", record
        assert f"gave up after {cap} attempts" in (record.error or ""), record.error
        attempts = fleet.attempts(job)
        assert [a.outcome for a in attempts] == ["lost"] * cap + ["finished"]
        assert attempts[-1].container_id is None  # the last delivery gave up without one
        assert len(fleet.created(job, events)) == cap
        wait_for("the poison job's containers to be gone", lambda: not fleet.leftovers(), 15)
        # The worker is none the worse: the next job runs normally.
        canary = fleet.wait(fleet.submit("print('canary ok')"), 60)
        assert (canary.verdict, canary.stdout, canary.attempt) == ("ok", "canary ok\n", 1)
    finally:
        events.close()
