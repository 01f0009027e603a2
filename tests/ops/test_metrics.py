"""Prometheus metrics: the pure mapping of a result's phases, the multiprocess plumbing in
processes of its own, and the endpoint of a real worker after real jobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from airlock.client import Airlock
from config.settings import Settings
from tasks.metrics import phase_seconds, total_seconds
from tests.services import ROOT, WorkerProcess
from workers import labels as L

# --- pure ---------------------------------------------------------------------------------


def test_phases_of_a_result_record_become_labelled_seconds() -> None:
    phases = {"queue_wait_ms": 12, "container_ready_ms": 250, "run_ms": 1000, "collect_ms": 5,
              "destroy_ms": 40, "persist_ms": 3, "pooled": False}
    assert phase_seconds(phases) == {"queued": 0.012, "container_start": 0.25, "run": 1.0,
                                     "collect": 0.005, "destroy": 0.04, "persist": 0.003}
    assert total_seconds(phases) == pytest.approx(1.31)


def test_phases_that_are_missing_or_not_numbers_are_left_out() -> None:
    assert phase_seconds(None) == {}
    assert phase_seconds({"run_ms": True, "collect_ms": -1, "persist_ms": "3"}) == {}
    # No run (an invalid job, a poison job): no duration to speak of.
    assert total_seconds({"persist_ms": 4}) is None


# --- multiprocess mode, in processes of its own -------------------------------------------

MULTIPROCESS = textwrap.dedent("""
    import os, sys, urllib.request
    from tasks import metrics
    metrics.enable(metrics.prepare_directory(sys.argv[1]))
    metrics.serve(int(sys.argv[2]), "127.0.0.1")
    for _ in range(2):  # two "pool children", forked after enable() as Celery's are
        pid = os.fork()
        if pid == 0:
            metrics.job_finished("ok", {"run_ms": 100, "queue_wait_ms": 1})
            os._exit(0)
        os.waitpid(pid, 0)
    metrics.reaped(["unknown_job", "job_finished", "job_finished"])
    metrics.containers_running(["job", "job", "pool"])
    metrics.set_preflight(False, "memory_bomb")
    metrics.set_preflight(True)
    print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/metrics").read().decode())
    metrics.disable()
    print("LEFT", sorted(os.listdir(sys.argv[1])) if os.path.isdir(sys.argv[1]) else None)
""")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_values_from_forked_children_add_up_at_the_parents_endpoint(tmp_path: Path) -> None:
    from tests.ops.conftest import free_port

    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale")  # a previous run's: must go
    done = subprocess.run([sys.executable, "-c", MULTIPROCESS, str(directory), str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    body, left = done.stdout.rsplit("LEFT", 1)
    got = _samples(body)
    assert got[("airlock_jobs_total", (("verdict", "ok"),))] == 2
    assert got[("airlock_job_phase_seconds_count", (("phase", "run"),))] == 2
    assert got[("airlock_job_duration_seconds_count", (("verdict", "ok"),))] == 2
    assert got[("airlock_job_duration_seconds_sum", (("verdict", "ok"),))] == pytest.approx(0.202)
    assert got[("airlock_reaper_removals_total", (("reason", "job_finished"),))] == 2
    assert got[("airlock_reaper_removals_total", (("reason", "unknown_job"),))] == 1
    assert got[("airlock_containers_running", (("role", "job"),))] == 2
    assert got[("airlock_containers_running", (("role", "pool"),))] == 1
    assert got[("airlock_preflight_status", (("check", "all"),))] == 1
    assert got[("airlock_preflight_status", (("check", "memory_bomb"),))] == 0
    assert left.strip() == "None"  # disable() removed the files and the (empty) directory


# --- a real worker ------------------------------------------------------------------------

def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return _samples(reply.read().decode())


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _eventually(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.integration
def test_worker_endpoint_counts_jobs_phases_containers_and_reaper_removals(
        ops_worker: WorkerProcess, ops_client: Airlock, ops_settings: Settings) -> None:
    port = ops_settings.metrics.port
    assert port is not None
    before = _scrape(port)
    assert _value(before, "airlock_preflight_status", check="all") == 1  # it started: passed

    # A job long enough to be seen running by a maintenance pass (every 2 s here).
    slow = ops_client.submit(code="import time; time.sleep(4); print('done')")
    _eventually(lambda: _value(_scrape(port), "airlock_containers_running", role="job") == 1)
    assert slow.wait(60).verdict == "ok"
    assert ops_client.submit(code="raise SystemExit(3)").wait(60).verdict == "nonzero_exit"
    _eventually(lambda: _value(_scrape(port), "airlock_containers_running", role="job") == 0)

    # An orphan: this fleet's labels, a job PostgreSQL never heard of, made long ago.
    api = docker.APIClient(version="auto")
    orphan = api.create_container(
        ops_settings.profiles["python"].image, ["true"], labels={
            L.MANAGED: "true", L.FLEET: ops_settings.fleet, L.ROLE: L.ROLE_JOB,
            L.JOB: str(uuid.uuid4()), L.ATTEMPT: "1", L.CREATED: f"{time.time() - 3600:.3f}"})
    try:
        _eventually(lambda: _value(_scrape(port), "airlock_reaper_removals_total",
                                   reason="unknown_job") >= 1 + _value(
            before, "airlock_reaper_removals_total", reason="unknown_job"))
    finally:
        try:
            api.remove_container(orphan["Id"], force=True)
        except docker.errors.NotFound:
            pass  # the reaper did it
        api.close()

    # A job's counters follow its stored result (which ended the client's wait) by a moment.
    _eventually(lambda: _value(_scrape(port), "airlock_jobs_total", verdict="nonzero_exit")
                >= 1 + _value(before, "airlock_jobs_total", verdict="nonzero_exit"))
    after = _scrape(port)
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    assert delta[("airlock_jobs_total", (("verdict", "ok"),))] == 1
    assert delta[("airlock_jobs_total", (("verdict", "nonzero_exit"),))] == 1
    assert delta[("airlock_job_duration_seconds_count", (("verdict", "ok"),))] == 1
    for phase in ("queued", "container_start", "run", "collect", "persist"):
        assert delta[("airlock_job_phase_seconds_count", (("phase", phase),))] == 2, phase
    # The slow job ran for 4 s: its run phase lands in the 5 s bucket, not below 2.5 s.
    assert delta[("airlock_job_phase_seconds_bucket", (("le", "2.5"), ("phase", "run")))] == 1
    assert delta[("airlock_job_phase_seconds_bucket", (("le", "5.0"), ("phase", "run")))] == 2
