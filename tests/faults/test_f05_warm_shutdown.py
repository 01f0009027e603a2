"""F5: warm shutdown (SIGTERM to the worker's main process) with jobs running and reserved.

Bounded: running jobs get ``shutdown_grace_s`` to finish; then the worker turns the warm
shutdown into a cold one (tasks/worker.py), whose SIGTERM to each pool process unwinds its
job: the container is removed and the job handed back (released to queued), and the broker
channel's close restores every unacknowledged message (running and reserved) to the queue.
Deploy with the main process alone receiving SIGTERM (``docker stop``, systemd
KillMode=mixed): a SIGTERM to every pool process at once hands every job back at once.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.rig import EventLog, Fleet, overlaps, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]
GRACE_S = 3.0


def test_f5_warm_shutdown_is_bounded_and_loses_nothing(fleet: Fleet) -> None:
    # Headroom: the two reserved jobs' messages are sent while both slots are busy.
    fleet.configure(concurrency=2, shutdown_grace_s=GRACE_S, admission_headroom=2)
    events = EventLog(fleet.settings.fleet).start()
    try:
        # Prefetch 4 with 2 pool processes: two jobs run, two wait reserved in the worker.
        w1 = fleet.worker("w1", args=("--prefetch-multiplier=2",))
        long_job = fleet.submit(
            f"import time; time.sleep(max(0, {time.time() + 14} - time.time())); print('long')",
            timeout_s=60)
        short_job = fleet.submit("import time; time.sleep(1); print('short')")
        fleet.running_container(long_job)
        fleet.running_container(short_job)
        reserved = [fleet.submit(f"print('reserved {i}')") for i in range(2)]
        wait_for("both to be reserved", lambda: all(
            fleet.broker_holds(j) == "unacked" for j in reserved)
            and w1.log().count(" received") >= 4, 10)

        t0 = time.monotonic()
        os.kill(w1.pid, signal.SIGTERM)
        assert w1.proc is not None
        w1.proc.wait(GRACE_S + 20)
        took = time.monotonic() - t0
        print(f"warm shutdown took {took:.1f}s (grace {GRACE_S}s)")
        assert took < GRACE_S + 10, took
        assert "worker.warm_shutdown_timeout" in w1.log()

        # The short job finished within the grace; the long one was handed back.
        assert fleet.record(short_job).verdict == "ok"
        assert fleet.record(long_job).status == "queued"
        assert [a.outcome for a in fleet.attempts(long_job)] == ["interrupted"]
        assert not fleet.leftovers()
        for job in [long_job, *reserved]:
            record = fleet.record(job)
            # Reserved jobs were never started (or ran in the grace, once a slot freed up).
            assert record.status == "queued" or record.verdict == "ok", record
            if record.status == "queued":
                assert fleet.broker_holds(job) == "queue", job

        fleet.worker("w2")
        for job in [long_job, short_job, *reserved]:
            record = fleet.wait(job, 60)
            assert record.verdict == "ok", record
            assert [a.outcome for a in fleet.attempts(job)][-1] == "finished"
            assert fleet.end_events(job) == 1
            assert not overlaps(fleet.run_intervals(job, events))
        assert fleet.record(long_job).attempt == 2
        assert not fleet.leftovers()
    finally:
        events.close()
