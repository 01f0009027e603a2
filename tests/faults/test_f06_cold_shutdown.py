"""F6: cold shutdown (SIGQUIT to the worker's main process) mid-job and during the result's
COMMIT. Celery terminates its pool processes with SIGTERM, which billiard turns into
SystemExit: the job's ``finally`` removes its container and the job is handed back; kombu
restores the unacknowledged message as the broker channel closes.

The result's COMMIT is caught in flight with a PostgreSQL proxy between the worker and the
database: either the statement never reached the server, or the COMMIT happened and its reply
never came back. Either way the job ends with exactly one stored result.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.rig import EventLog, Fleet, PgProxy, overlaps, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def cold_stop(fleet: Fleet, name: str = "w1") -> None:
    [w] = [w for w in fleet.workers if w.log_path.name.endswith(f"-{name}.log")]
    assert w.proc is not None
    os.kill(w.pid, signal.SIGQUIT)
    w.proc.wait(30)
    assert "Cold shutdown" in w.log()


def test_f6_cold_shutdown_mid_job_removes_the_container_and_hands_the_job_back(
        fleet: Fleet) -> None:
    events = EventLog(fleet.settings.fleet).start()
    try:
        fleet.worker("w1")
        job = fleet.submit("import time; time.sleep(3); print('done')", timeout_s=30)
        fleet.running_container(job)
        cold_stop(fleet)
        # Removed by the unwinding pool process (no worker is left to reap it).
        wait_for("the container to be removed", lambda: not fleet.leftovers(), 5)
        assert fleet.record(job).status == "queued"
        assert [a.outcome for a in fleet.attempts(job)] == ["interrupted"]
        assert fleet.broker_holds(job) == "queue"  # restored by kombu at the channel's close

        fleet.worker("w2")
        record = fleet.wait(job, 60)
        assert (record.verdict, record.stdout, record.attempt) == ("ok", "done\n", 2)
        assert [a.outcome for a in fleet.attempts(job)] == ["interrupted", "finished"]
        assert fleet.end_events(job) == 1
        assert not overlaps(fleet.run_intervals(job, events)) and not fleet.leftovers()
    finally:
        events.close()


@pytest.mark.parametrize("when", ["hold_statement", "hold_after_commit"])
def test_f6_cold_shutdown_during_the_result_commit(fleet: Fleet, pg_proxy: PgProxy,
                                                   when: str) -> None:
    pg_proxy.arm(when)  # catch the result write of the first job on this proxy
    fleet.worker("w1", database_url=pg_proxy.url(fleet.settings.database_url))
    job = fleet.submit("print('done')")
    assert pg_proxy.fired.wait(30), "the result write never came"
    cold_stop(fleet)
    pg_proxy.cut_all()
    assert not fleet.leftovers()  # removed by the unwinding attempt's teardown

    committed = when == "hold_after_commit"
    record = fleet.record(job)
    assert record.status == ("finished" if committed else "running"), record
    fleet.worker("w2")
    if not committed:
        # The attempt died with its COMMIT unsent and its container gone (checked above), so
        # its run deadline may honestly be moved into the past: the reconciler re-enqueues it.
        wait_for("the restored delivery to be turned away",
                 lambda: "job.not_claimed" in fleet.workers[-1].log(), 20)
        fleet.expire_deadline(job)
    record = fleet.wait(job, 60)
    assert (record.verdict, record.stdout) == ("ok", "done\n")
    outcomes = [a.outcome for a in fleet.attempts(job)]
    assert outcomes == (["finished"] if committed else ["lost", "finished"]), outcomes
    if committed:
        wait_for("the restored delivery to be turned away",
                 lambda: "job.not_claimed" in fleet.workers[-1].log(), 20)
    assert not fleet.leftovers()
