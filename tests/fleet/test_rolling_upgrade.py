"""F22: a rolling upgrade of a fleet of two Docker hosts with jobs flowing.

Two "hosts" on this machine, each its own engine (the main one, and scripts/second-engine.sh's)
and its own worker started with compose/host.yml's settings (tests/fleet/shape.py says why as
processes), both joined to one control plane. While 200 jobs flow: drain host 1 (``airlock
fleet drain``: it takes no new job, its running ones finish, it reports empty), restart its
worker (it comes back drained), undrain it; then the same on host 2.

Then: every job finished exactly once (lost 0, run twice 0), no job started on a host while it
was drained, both hosts served jobs, no container is left on either engine. It prints each
job's host, the jobs per host, the longest queue wait while a host was drained, and
``airlock fleet status``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config.settings import Settings
from tests.faults.rig import ENGINE1, ENGINE2, Engine2, Fleet, free_port, start_supervised, wait_for
from tests.fleet.shape import host_env
from tests.services import ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.fleet, pytest.mark.integration]
JOBS = 200
FEED_S = 70.0  # jobs are submitted evenly over this long: they flow through both upgrades


def code(i: int) -> str:
    return f"import time; time.sleep({0.2 + (i * 7919 % 7) / 10:.1f}); print('job {i}')"


@dataclass
class Window:
    """A host out of service: from the drain command to the undrain command."""

    host: str
    drained_at: float = 0.0
    empty_at: float = 0.0
    undrained_at: float = 0.0
    drain_output: str = ""
    restart_s: float = 0.0
    status: str = ""  # airlock fleet status while drained, its worker restarted


@dataclass
class Feed:
    fleet: Fleet
    jobs: dict[str, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for i in range(JOBS):
            self.jobs[self.fleet.submit(code(i), timeout_s=20)] = i
            time.sleep(FEED_S / JOBS)
        self.done.set()


def fleet_cli(s: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airlock.cli", "fleet", *args], cwd=ROOT,
                          env=worker_env(s), capture_output=True, text=True, timeout=timeout)


def start_host(fleet: Fleet, name: str, engine: str, folder: Path) -> WorkerProcess:
    s = fleet.settings.but(hostname=name, docker_host=engine)
    env = host_env(s, folder, AIRLOCK_HOSTNAME=name, AIRLOCK_WORKER_NAME_FROM="setting",
                   AIRLOCK_DOCKER_HOST=engine, AIRLOCK_CONCURRENCY="2",
                   AIRLOCK_METRICS_PORT=str(free_port()))
    proc = WorkerProcess(s, fleet.logs / f"{s.fleet}-{name}.log", **env)
    fleet.workers.append(proc)
    start_supervised(proc)
    return proc


def upgrade(fleet: Fleet, w: WorkerProcess, window: Window) -> None:
    """Drain, restart (the new image would be started here), check it came back drained,
    undrain."""
    s, host = fleet.settings, window.host
    window.drained_at = time.time()
    done = fleet_cli(s, "drain", host, "--timeout", "120")
    window.empty_at = time.time()
    window.drain_output = done.stdout.strip()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{host}: empty after" in done.stdout, done.stdout
    t0 = time.monotonic()
    seen = len(w.log())
    w.stop()
    start_supervised(w)
    window.restart_s = time.monotonic() - t0
    assert "worker.drained" in w.log()[seen:], "a drained host's worker must start drained"
    status = fleet_cli(s, "status")
    assert status.returncode == 0 and f"{host}  drained" in status.stdout, status.stdout
    window.status = status.stdout
    time.sleep(3.0)  # jobs keep flowing meanwhile: none may reach the drained host
    window.undrained_at = time.time()  # from here on the worker may take jobs
    done = fleet_cli(s, "undrain", host)
    assert done.returncode == 0 and "takes jobs from" in done.stdout, done.stdout + done.stderr


def test_rolling_upgrade_of_two_hosts_with_jobs_flowing(control_plane: Fleet, engine2: Engine2,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    fleet = control_plane
    tag = uuid.uuid4().hex[:6]
    names = (f"host1-{tag}", f"host2-{tag}")
    workers = {names[0]: start_host(fleet, names[0], ENGINE1, tmp_path),
               names[1]: start_host(fleet, names[1], ENGINE2, tmp_path)}
    feed = Feed(fleet)
    feeder = threading.Thread(target=feed.run, daemon=True)
    t0 = time.monotonic()
    feeder.start()
    time.sleep(10.0)  # both hosts serving
    windows = [Window(name) for name in names]
    for window in windows:
        upgrade(fleet, workers[window.host], window)
    feeder.join(FEED_S + 60)
    assert feed.done.is_set(), "the feeder did not finish"
    wait_for("every job to finish", lambda: finished(fleet) >= JOBS, 240, 0.5)
    elapsed = time.monotonic() - t0
    status_end = fleet_cli(fleet.settings, "status")
    assert status_end.returncode == 0, status_end.stderr

    report = check(fleet, feed.jobs, windows)
    for w in workers.values():
        w.stop()
    wait_for("no container of the fleet on either engine",
             lambda: not fleet.containers(ENGINE1) + fleet.containers(ENGINE2), 60, 0.5)
    lines = [f"rolling upgrade: {elapsed:.0f} s, {report}",
             *(f"  {w.drain_output.splitlines()[-1]}; worker restarted in"
               f" {w.restart_s:.1f} s; out of service {w.undrained_at - w.drained_at:.1f} s"
               for w in windows),
             "airlock fleet status, host 1 drained and its worker restarted:",
             windows[0].status.rstrip(),
             "airlock fleet status, at the end:", status_end.stdout.rstrip()]
    text = "\n".join([*lines, "each job's host (job number: host):", job_hosts(fleet, feed.jobs)])
    with capsys.disabled():  # in CI's log too
        print("\n" + text)
    (fleet.logs / "rolling-upgrade.txt").write_text(text + "\n")


def finished(fleet: Fleet) -> int:
    return int(fleet.sql("SELECT count(*) FROM jobs WHERE status = 'finished'")[0][0])


def job_hosts(fleet: Fleet, jobs: dict[str, int], per_line: int = 10) -> str:
    """Each job's host, in submission order, ten to a line."""
    rows = dict(fleet.sql("SELECT id::text, worker_host FROM jobs"))
    cells = [f"{i:3d}: {rows.get(job)}" for job, i in sorted(jobs.items(), key=lambda kv: kv[1])]
    return "\n".join("  " + "  ".join(cells[n:n + per_line])
                     for n in range(0, len(cells), per_line))


def check(fleet: Fleet, jobs: dict[str, int], windows: list[Window]) -> str:
    rows = fleet.sql("SELECT id::text, status, verdict, stdout, worker_host FROM jobs")
    assert len(rows) == len(jobs) == JOBS
    lost = [r for r in rows if r[1] != "finished"]
    assert not lost, lost[:5]
    for job, _, verdict, stdout, _ in rows:
        assert verdict == "ok" and bytes(stdout) == f"job {jobs[job]}\n".encode(), (job, verdict)
    attempts = fleet.sql("SELECT job_id::text, attempt, worker_host,"
                         " extract(epoch FROM started_at), outcome FROM attempts")
    per_job = Counter(a[0] for a in attempts)
    run_twice = [j for j, n in per_job.items() if n > 1]
    assert not run_twice, [(j, [a for a in attempts if a[0] == j]) for j in run_twice[:3]]
    # No job started on a host between its being reported empty and its undrain.
    for w in windows:
        during = [a for a in attempts if a[2] == w.host and w.empty_at < a[3] < w.undrained_at]
        assert not during, (w.host, during[:3])
    per_host = Counter(r[4] for r in rows)
    assert all(per_host[w.host] > 0 for w in windows), per_host
    waits = fleet.sql(
        "SELECT extract(epoch FROM a.started_at), extract(epoch FROM a.started_at - j.queued_at)"
        " FROM attempts a JOIN jobs j ON j.id = a.job_id")
    in_drain = [wait for started, wait in waits
                if any(w.drained_at <= started <= w.undrained_at for w in windows)]
    longest_drain = max(in_drain, default=0.0)
    longest = max((wait for _, wait in waits), default=0.0)
    return (f"jobs {len(rows)}, per host {dict(sorted(per_host.items()))}, lost 0, run twice 0,"
            f" verdicts {dict(Counter(r[2] for r in rows))}, longest queue wait during a drain"
            f" {float(longest_drain):.1f} s (of {len(in_drain)} jobs started then), longest"
            f" overall {float(longest):.1f} s")
