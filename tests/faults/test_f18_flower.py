"""F18: Flower down or restarted: no effect on processing or results.

Workers publish Celery events (-E) whether anyone listens or not: with Flower down they go
nowhere, and jobs run as before. The real ``airlock flower`` is started against a Redis of the
test's own, shown to receive the workers' events, SIGKILLed while jobs run, and started again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.faults.conftest import MakeRedis
from tests.faults.rig import Fleet, env_for, free_port, wait_for
from tests.services import ROOT, worker_env

pytestmark = [pytest.mark.faults, pytest.mark.integration]
AUTH = ("airlock", "f18-secret")


class Flower:
    def __init__(self, fleet: Fleet, log: Path) -> None:
        self.port = free_port()
        self.env = worker_env(fleet.settings, **env_for(fleet.settings)) | {
            "AIRLOCK_FLOWER_USER": AUTH[0], "AIRLOCK_FLOWER_PASSWORD": AUTH[1]}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Flower:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "airlock.cli", "flower", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for("Flower to answer", self.healthy, 30, 0.25)
        return self

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", auth=AUTH, timeout=2)

    def healthy(self) -> bool:
        try:
            return self.get("/healthcheck").status_code == 200
        except requests.RequestException:
            return False

    def seen(self, job_id: str) -> bool:
        """Flower got the events of this job's task (its args carry the job id)."""
        try:
            return job_id in self.get("/api/tasks").text
        except requests.RequestException:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def watched(fleet: Fleet, flower: Flower) -> bool:
    """Run a job; True once Flower shows its task (it only sees events sent after its event
    receiver connected, a moment after it answers HTTP)."""
    job = fleet.submit("print('watched')")
    assert fleet.wait(job, 30).verdict == "ok"
    for _ in range(10):
        if flower.seen(job):
            return True
        time.sleep(0.3)
    return False


def test_f18_flower_down_or_restarted_changes_nothing(
        fleet: Fleet, make_redis: MakeRedis, fault_logs: Path) -> None:
    redis = make_redis(appendonly=False)
    fleet.configure(broker_url=redis.url, redis_url=redis.url, concurrency=2)
    fleet.worker()
    flower = Flower(fleet, fault_logs / f"{fleet.settings.fleet}-flower.log")
    try:
        # Never started: the events have no consumer at all.
        before = [fleet.submit(f"print('before {i}')") for i in range(3)]
        assert all(fleet.wait(j, 30).verdict == "ok" for j in before)

        flower.start()
        wait_for("Flower to follow the workers' events", lambda: watched(fleet, flower), 40, 0)

        # Killed while jobs run.
        during = [fleet.submit("import time; time.sleep(1); print('during')") for _ in range(4)]
        flower.kill()
        records = [fleet.wait(j, 60) for j in during]
        assert all((r.verdict, r.stdout) == ("ok", "during\n") for r in records), records

        flower.start()  # and back: it answers and follows new jobs
        wait_for("the restarted Flower to follow events", lambda: watched(fleet, flower), 40, 0)
        assert all(fleet.end_events(j) == 1 for j in [*before, *during])
        assert not fleet.leftovers()
    finally:
        flower.kill()
