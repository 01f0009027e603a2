"""F12, F14: the Docker engine restarted mid-job, and unavailable when a job starts.

These use the second engine (scripts/second-engine.sh) with a worker bound to it
(AIRLOCK_DOCKER_HOST), so the machine's main engine is never restarted.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.rig import ENGINE2, Engine2, EventLog, Fleet, wait_for

pytestmark = [
    pytest.mark.faults, pytest.mark.integration,
    # docker-py's unix-socket connect leaks its socket when the engine is away (the event log
    # reconnects while engine 2 is down); the ResourceWarning is that, not Airlock's.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def test_f12_engine_restarted_mid_job(fleet: Fleet, engine2: Engine2) -> None:
    fleet.configure(docker_host=ENGINE2, hostname="engine2-host")
    events = EventLog(fleet.settings.fleet, (ENGINE2,)).start()
    try:
        fleet.worker()
        job = fleet.submit(
            f"import time; time.sleep(max(0, {time.time() + 14} - time.time())); print('done')",
            timeout_s=60)
        first = fleet.running_container(job)
        took = engine2.kill_daemon()  # SIGTERM: it stops its containers (10 s), then exits
        engine2.start()
        print(f"engine 2 stopped in {took:.1f}s")
        record = fleet.wait(job, 90)
        outcomes = [a.outcome for a in fleet.attempts(job)]
        print("attempts:", outcomes, "verdict:", record.verdict, record.error)
        # Not the job's fault: never a verdict about the job from a killed container. Either
        # retried to a normal end, or an infrastructure error once the retries ran out.
        retried = record.verdict == "ok" and outcomes[0] == "infra_error" \
            and outcomes[-1] == "finished"
        gave_up = record.verdict == "error" and "infrastructure" in (record.error or "")
        assert retried or gave_up, (record, outcomes)
        wait_for("no container left on engine 2", lambda: not fleet.leftovers(ENGINE2), 20)
        assert first not in {c["Id"] for c in fleet.containers(ENGINE2)}
    finally:
        events.close()


def test_f14_engine_unavailable_when_the_job_starts(fleet: Fleet, engine2: Engine2) -> None:
    fleet.configure(docker_host=ENGINE2, hostname="engine2-host")
    w = fleet.worker()
    engine2.kill_daemon()
    try:
        job = fleet.submit("print('done')")
        wait_for("two failed tries", lambda: w.log().count("job.infrastructure_error") >= 2, 30)
        # Handed back between tries (released to queued, its retry waiting): not lost.
        wait_for("the job queued between tries", lambda: fleet.record(job).status == "queued", 10)
    finally:
        engine2.start()
    record = fleet.wait(job, 60)
    assert (record.verdict, record.stdout) == ("ok", "done\n"), record
    outcomes = [a.outcome for a in fleet.attempts(job)]
    assert outcomes[-1] == "finished" and set(outcomes[:-1]) == {"infra_error"}, outcomes
    assert not fleet.leftovers(ENGINE2)
