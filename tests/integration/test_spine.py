"""The job spine through the public path: client → Redis → worker → container → PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import docker
import psutil
import pytest
import sqlalchemy as sa

from airlock.client import Airlock, WaitTimeout
from config.settings import Settings
from tests.conftest import RunJob
from tests.services import WorkerProcess
from workers import engine
from workers import labels as L

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]
MiB = 1024**2


def test_print_gives_42_and_exit_0(run_job: RunJob) -> None:
    record = run_job("print(6*7)")
    assert (record.verdict, record.exit_code, record.stdout) == ("ok", 0, "42\n")
    assert record.status == "finished"


def test_sys_exit_3_is_nonzero_exit(run_job: RunJob) -> None:
    record = run_job("import sys; print('bye', file=sys.stderr); sys.exit(3)")
    assert (record.verdict, record.exit_code, record.stderr) == ("nonzero_exit", 3, "bye\n")


def test_memory_bomb_under_small_limit_is_oom(run_job: RunJob) -> None:
    record = run_job("a = bytearray(512 * 2**20)", memory_bytes=64 * MiB)
    assert record.verdict == "oom", record.summary()
    assert record.evidence is not None and record.evidence["oom_killed"] is True
    # It reached its limit (the counter may overshoot by a few kernel pages) and no further.
    assert record.peak_memory_bytes is not None
    assert 48 * MiB <= record.peak_memory_bytes <= 65 * MiB


def test_busy_loop_times_out_in_about_2s(run_job: RunJob) -> None:
    record = run_job("while True: pass", timeout_s=2)
    assert record.verdict == "timeout"
    assert record.evidence is not None and record.evidence["timed_out"] is True
    assert record.wall_ms is not None and 1900 <= record.wall_ms <= 3500, record.wall_ms
    assert record.cpu_ms is not None and record.cpu_ms >= 400  # it really spun (loose: a busy host)


def test_50mb_of_output_is_capped_with_worker_memory_bounded(
        run_job: RunJob, worker: WorkerProcess) -> None:
    before = _worker_rss(worker)
    record = run_job("import sys\nfor _ in range(50): sys.stdout.write('x' * 2**20)",
                     output_bytes=4 * MiB)
    after = _worker_rss(worker)
    assert record.verdict == "output_limit", record.summary()
    assert record.stdout_truncated is True
    assert record.evidence is not None and record.evidence["bytes_dropped"] > 0
    assert len(record.stdout_bytes) <= 4 * MiB
    assert after - before < 40 * MiB, (before, after)


def test_stdin_files_env_and_argv_reach_the_job(run_job: RunJob) -> None:
    record = run_job(
        "import os, sys\nprint(sys.stdin.read().upper(), open('data/in.txt').read(),"
        " os.environ['GREETING'], os.getcwd())",
        stdin="hello", files={"data/in.txt": "file!"}, env={"GREETING": "hi"})
    assert record.stdout == "HELLO file! hi /workspace\n", record.stderr


def test_non_utf8_output_survives_as_bytes(run_job: RunJob) -> None:
    record = run_job("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe \\x00 end')")
    assert record.verdict == "ok"
    assert record.stdout_bytes == b"ok \xff\xfe \x00 end"
    as_json = record.to_json()
    assert as_json["stdout_valid_utf8"] is False and "stdout_b64" in as_json


def test_result_row_holds_the_record(run_job: RunJob) -> None:
    record = run_job("print('x')", timeout_s=7, memory_bytes=256 * MiB, pids=64, cpus=1)
    assert record.limits["timeout_s"] == 7 and record.limits["memory_bytes"] == 256 * MiB
    assert record.limits["pids"] == 64 and record.limits["cpus"] == 1
    assert record.image == "airlock/sandbox:latest" and record.profile == "python"
    assert record.worker_host and record.container_id and record.attempt == 1
    assert record.wall_ms is not None and record.cpu_ms is not None
    assert record.peak_memory_bytes and record.peak_memory_bytes > 1 * MiB
    assert record.queued_at <= record.started_at <= record.finished_at  # type: ignore[operator]
    assert record.provenance is not None and len(record.provenance["seccomp_sha256"]) == 64
    phases: dict[str, Any] = record.phases or {}
    assert {"queue_wait_ms", "container_ready_ms", "run_ms", "collect_ms"} <= set(phases)


def test_the_result_writes_own_time_joins_the_rows_phases(run_job: RunJob, client: Airlock) -> None:
    # persist_ms is known only once the result is written: it is merged in just after.
    record = run_job("print(1)")
    deadline = time.monotonic() + 10
    phases: dict[str, Any] = {}
    while "persist_ms" not in phases and time.monotonic() < deadline:
        phases = client.result(record.id).phases or {}
        time.sleep(0.05)
    assert isinstance(phases.get("persist_ms"), int) and phases["persist_ms"] >= 0, phases
    assert {"queue_wait_ms", "container_ready_ms", "run_ms", "collect_ms"} <= set(phases)


def test_waiting_on_a_job_just_submitted_reads_its_row_once(client: Airlock,
                                                           worker: WorkerProcess) -> None:
    # The end is announced through Redis: the row is read once, after it. A wait on an id
    # the client did not just queue reads the row first (the job may have ended long ago).
    # (The submission's admission reads the fleet's slots and waiting jobs: not the row.)
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "WHERE jobs.id =" in statement:
            selects.append(statement)

    sa.event.listen(client.store.engine, "before_cursor_execute", count)
    try:
        handle = client.submit(code="print(6*7)")
        record = handle.wait(60)
        first = len(selects)
        again = client.wait(handle.id, 10)
    finally:
        sa.event.remove(client.store.engine, "before_cursor_execute", count)
    assert (record.verdict, record.stdout) == ("ok", "42\n"), record.summary()
    assert first == 1, selects
    assert again.id == record.id and len(selects) == 2


def test_a_wait_that_runs_out_of_time_still_looks_at_the_job_once(client: Airlock,
                                                                  worker: WorkerProcess) -> None:
    handle = client.submit(code="import time; time.sleep(2)")
    t = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"still (queued|running) after 0"):
        handle.wait(0)
    assert time.monotonic() - t < 4.0  # not a 5 s wait on Redis before the look
    assert handle.wait(60).verdict == "ok"


def test_jobs_run_under_the_runtime_the_fleet_resolved(client: Airlock, worker: WorkerProcess,
                                                       settings: Settings) -> None:
    api = docker.APIClient(version="auto")
    try:
        expected = engine.runtime_for(api, settings.runtime)  # crun here, once setup-host ran
        handle = client.submit(code="import time; time.sleep(3)")
        deadline = time.monotonic() + 30
        seen: list[dict[str, Any]] = []
        while not seen and time.monotonic() < deadline:
            seen = api.containers(filters={"label": f"{L.JOB}={handle.id}"})
            time.sleep(0.05)
        assert seen, "the job's container never appeared"
        runtime = api.inspect_container(seen[0]["Id"])["HostConfig"]["Runtime"]
    finally:
        api.close()
    record = handle.wait(60)
    assert record.verdict == "ok", record.summary()
    assert runtime == expected and record.provenance is not None
    assert record.provenance["runtime"] == expected


def test_other_profiles_run(run_job: RunJob) -> None:
    assert run_job("console.log(6*7)", profile="node").stdout == "42\n"
    assert run_job("echo $((6*7))", profile="shell").stdout == "42\n"
    c = run_job('#include <stdio.h>\nint main(){printf("%d\\n", 6*7);return 0;}', profile="c")
    assert c.stdout == "42\n", c.stderr


def test_the_worker_serves_jobs_concurrently(run_job: RunJob, client: Any) -> None:
    t0 = time.monotonic()
    handles = [client.submit({"code": "import time; time.sleep(1.5)"}) for _ in range(2)]
    records = [h.wait(60) for h in handles]
    assert all(r.verdict == "ok" for r in records)
    assert time.monotonic() - t0 < 2.9  # two slots: both ran at once


def _worker_rss(worker: WorkerProcess) -> int:
    procs = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children()]
    return max(p.memory_info().rss for p in procs)
