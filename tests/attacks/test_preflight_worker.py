"""A34: a worker runs its preflight canaries before taking jobs, and refuses to start when a
job would not be contained (a broken seccomp profile) or a bound cannot be enforced (a disk
bound on a filesystem without quotas)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.settings import Settings
from tasks import preflight
from tests.attacks.conftest import Attack
from tests.conftest import AGENT_RUN
from tests.services import ROOT, WorkerProcess, airlock_containers, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
CANARIES = ("denied_syscalls", "memory_bomb", "fork_bomb", "read_only_root", "disk_fill")
SUMMARY = re.compile(r"preflight (ok|FAILED) in ([\d.]+)s: (.*)")


def run_worker_until_exit(settings: Settings, log: Path, timeout: float = 90,
                          **env: str) -> tuple[int | None, str]:
    """Start ``airlock worker``; return its exit status (None: it started) and its output."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "airlock.cli", "worker"], cwd=ROOT,
                                env=worker_env(settings, **env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return proc.returncode, log.read_text(errors="replace")
            if " ready." in log.read_text(errors="replace"):
                return None, log.read_text(errors="replace")
            time.sleep(0.1)
        return None, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def canary_seconds(log: str) -> tuple[bool, float, dict[str, str]]:
    found = SUMMARY.search(log)
    assert found, log[-2000:]
    parts = dict(part.split(" ", 1) for part in found.group(3).split(", "))
    return found.group(1) == "ok", float(found.group(2)), parts


def no_preflight_containers(settings: Settings) -> list[object]:
    return [c for c in airlock_containers(settings.fleet)
            if (c.get("Labels") or {}).get("org.airlock.role") == "preflight"]  # type: ignore[union-attr]


def test_a34_the_worker_ran_its_canaries_before_taking_jobs(attack: Attack,
                                                             worker: WorkerProcess) -> None:
    ok, seconds, parts = canary_seconds(worker.log())
    inner = {c.name for c in preflight.inner_canaries(attack.settings).values()}

    assert ok and set(parts) == set(CANARIES) | inner and inner, parts
    assert all(p.startswith("ok ") for p in parts.values()), parts
    assert worker.log().index("preflight ok") < worker.log().index(" ready.")
    attack.record("A34", "preflight at worker start: " + ", ".join(CANARIES) + " as canary jobs "
                  "through the runner, in parallel", f"all contained in {seconds:.1f} s "
                  "before the worker took a job", None, verdict="ok", preflight_s=seconds,
                  canaries={k: v.split()[-1] for k, v in parts.items()})


def test_a34_a_worker_with_an_allow_all_seccomp_profile_refuses_to_start(
        attack: Attack, settings: Settings, tmp_path: Path) -> None:
    profile = tmp_path / "allow-all.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    broken = settings.but(**{"queue": f"{settings.queue}-broken"})
    t0 = time.monotonic()
    status, log = run_worker_until_exit(broken, tmp_path / "worker.log",
                                        AIRLOCK_SECCOMP_PROFILE=str(profile))
    seconds = time.monotonic() - t0

    assert status is not None and status != 0, log[-2000:]
    # Under AIRLOCK_TEST_PROFILES=agent the canaries run under the agent profile, which cannot be
    # derived from an allow-all base: refused all the same, for that reason.
    said = ("could not run: HostNotSafe: the agent seccomp profile could not be derived"
            if AGENT_RUN else "not refused with EPERM")
    assert f"refusing to start: preflight: denied_syscalls: {said}" in log, log[-2000:]
    assert " ready." not in log
    assert no_preflight_containers(settings) == []
    attack.record("A34", "start a worker with AIRLOCK_SECCOMP_PROFILE pointing at an allow-all "
                  "profile", f"the worker exits {status} before taking jobs: 'refusing to "
                  "start: preflight: denied_syscalls: not refused with EPERM ...'; its canary "
                  "containers are gone", None, verdict=f"refused (exit {status})",
                  worker_exit_after_s=round(seconds, 1))


def test_a34_a_worker_whose_disk_bound_cannot_be_enforced_refuses_to_start_unless_tmpfs(
        attack: Attack, settings: Settings, tmp_path: Path) -> None:
    plain = tmp_path / "volumes"  # ext4 under /tmp: no btrfs, no quota groups
    plain.mkdir()
    other = settings.but(**{"queue": f"{settings.queue}-nobtrfs"})
    status, log = run_worker_until_exit(other, tmp_path / "refused.log",
                                        AIRLOCK_VOLUMES_ROOT=str(plain))
    tmpfs_status, tmpfs_log = run_worker_until_exit(
        other, tmp_path / "tmpfs.log", AIRLOCK_VOLUMES_ROOT=str(plain), AIRLOCK_STORAGE="tmpfs")

    assert status is not None and status != 0, log[-2000:]
    assert "refusing to start: disk bound:" in log and "not a btrfs filesystem" in log, log[-2000:]
    # The explicit alternative: each job folder a sized tmpfs, held in memory. It starts, and
    # its own disk-fill canary proved the bound.
    assert tmpfs_status is None and " ready." in tmpfs_log, tmpfs_log[-2000:]
    ok, _, parts = canary_seconds(tmpfs_log)
    assert ok and parts["disk_fill"].startswith("ok"), parts
    assert list(plain.iterdir()) == []
    attack.record("A34", "start a worker with AIRLOCK_VOLUMES_ROOT on ext4 (no quotas); then "
                  "with AIRLOCK_STORAGE=tmpfs", f"refused (exit {status}): 'disk bound: ... is "
                  "not a btrfs filesystem with quotas enabled'; with the explicit tmpfs setting "
                  "it starts and its disk-fill canary stops at the bound", None,
                  verdict=f"refused (exit {status}); tmpfs: starts")


def test_a_worker_refuses_a_runtime_the_engine_does_not_have(settings: Settings,
                                                              tmp_path: Path) -> None:
    # A fleet of its own: the session's worker (with its warm pool, when on) is not counted.
    other = settings.but(**{"queue": f"{settings.queue}-noruntime",
                                        "fleet": f"{settings.fleet}-noruntime"})
    status, log = run_worker_until_exit(other, tmp_path / "worker.log",
                                        AIRLOCK_RUNTIME="airlock-no-such-runtime")
    assert status == 3, log[-2000:]
    assert ("refusing to start: runtime 'airlock-no-such-runtime' (AIRLOCK_RUNTIME) is not"
            " registered with the engine, which has: ") in log, log[-2000:]
    assert airlock_containers(other.fleet) == []
