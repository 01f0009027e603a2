"""Cancellation through the API and the CLI, against a real worker."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import pytest
import sqlalchemy as sa

from airlock.client import Airlock
from config.settings import Settings
from tasks.models import Attempt, Job
from tests.integration.test_streaming import record_figure
from tests.services import ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]


def airlock(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airlock.cli", *args], cwd=ROOT, text=True,
                          env=worker_env(settings), capture_output=True, timeout=60)


def attempts(client: Airlock, job_id: str) -> int:
    with client.store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(
            Attempt.job_id == uuid.UUID(job_id))).scalar_one())


@pytest.fixture
def idle_client(settings: Settings) -> Iterator[Airlock]:
    """A client whose queue no worker listens to: its jobs stay queued."""
    c = Airlock(settings.but(**{"queue": f"{settings.queue}-idle"}))
    yield c
    c.redis.delete(c.settings.queue)
    c.close()


def test_a_cancelled_queued_job_never_starts(client: Airlock, idle_client: Airlock,
                                             worker: WorkerProcess) -> None:
    handle = idle_client.submit({"code": "print('must not run')"})
    assert client.cancel(handle.id) == "cancelled"
    record = client.result(handle.id)
    assert (record.status, record.verdict, record.attempt) == ("finished", "cancelled", 0)
    # Readers and waiters learn at once: the stream ends with the verdict.
    events = list(client.events(handle.id))
    assert [e.kind for e in events] == ["end"] and events[0].summary["verdict"] == "cancelled"
    # Its message reaching a worker changes nothing: refused and dropped, no container.
    client.enqueue(handle.id)
    deadline = time.monotonic() + 10
    while not any("job.not_claimed" in line and handle.id in line
                  for line in worker.log().splitlines()):
        assert time.monotonic() < deadline, "the worker never logged the refused delivery"
        time.sleep(0.1)
    record = client.result(handle.id)
    assert (record.verdict, record.attempt, record.container_id) == ("cancelled", 0, None)
    assert record.started_at is None
    assert attempts(client, handle.id) == 0


def test_a_running_job_is_killed_within_a_second(client: Airlock, worker: WorkerProcess) -> None:
    code = "import sys, time\nsys.stdout.write('started\\n')\nsys.stdout.flush()\ntime.sleep(60)"
    handle = client.submit({"code": code, "limits": {"timeout_s": 20}})
    events = handle.events()
    assert next(events).data == b"started\n"
    container = client.result(handle.id).container_id
    assert container
    api = docker.APIClient(version="auto")
    try:
        t0 = time.monotonic()
        assert client.cancel(handle.id) == "cancelling"
        while True:
            try:
                running = api.inspect_container(container)["State"]["Running"]
            except docker.errors.NotFound:
                running = False
            if not running:
                break
            time.sleep(0.02)
        killed_s = time.monotonic() - t0
    finally:
        api.close()
    assert killed_s < 1.0, killed_s
    record_figure("cancel_to_container_stopped_ms", round(killed_s * 1000))
    rest = list(events)
    assert rest[-1].kind == "end" and rest[-1].summary["verdict"] == "cancelled"
    record = handle.wait(30)
    assert record.verdict == "cancelled" and record.evidence is not None
    assert record.evidence["cancelled"] is True
    assert record.wall_ms is not None and record.wall_ms < 10_000
    # no_leftovers: the container is removed.


def test_cancel_of_a_job_whose_worker_died_ends_it(client: Airlock, idle_client: Airlock,
                                                   worker: WorkerProcess) -> None:
    """Flagged while 'running', but its worker is gone: the next delivery ends it cancelled
    (the claim refuses flagged rows, so without this it would be re-enqueued forever)."""
    handle = idle_client.submit({"code": "print(1)"})
    with client.store.engine.begin() as conn:
        conn.execute(sa.update(Job).where(Job.id == uuid.UUID(handle.id)).values(
            status="running", attempt=1, lease_until=sa.func.now() - sa.text("interval '1 min'"),
            run_deadline=sa.func.now() - sa.text("interval '1 min'")))
        conn.execute(sa.insert(Attempt).values(job_id=uuid.UUID(handle.id), attempt=1,
                                               worker_host="gone"))
    assert client.cancel(handle.id) == "cancelling"
    client.enqueue(handle.id)
    record = client.wait(handle.id, 20)
    assert (record.verdict, record.attempt) == ("cancelled", 1)
    assert attempts(client, handle.id) == 1  # it never ran again


def test_cli_cancel_of_finished_unknown_and_malformed_ids(settings: Settings, client: Airlock,
                                                          worker: WorkerProcess) -> None:
    done = client.submit({"code": "print(1)"}).wait(60)
    again = airlock(settings, "cancel", done.id)
    assert again.returncode == 0, again.stderr
    assert "already finished: nothing to cancel" in again.stdout
    assert client.result(done.id).verdict == "ok"  # untouched
    unknown = airlock(settings, "cancel", str(uuid.uuid4()))
    assert unknown.returncode != 0 and "no job" in unknown.stderr
    garbage = airlock(settings, "cancel", "not-a-job")
    assert garbage.returncode != 0 and "no job" in garbage.stderr
    assert "Traceback" not in garbage.stderr
