"""``airlock doctor`` on this host, through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from config.settings import Settings
from tasks.host_checks import KNOWN_RUNC_CVES, parse_runc_version
from tests.ops.conftest import free_port
from tests.ops.stack import empty_database
from tests.services import ROOT, worker_env

CHECKS = ["docker engine", "runc", "runtime", "cgroup", "disk bound", "seccomp", "apparmor", "launcher",
          "firewall",
          "networks", "sandbox image", "redis", "postgresql", "migrations"]
# What this host must pass whatever else is going on (the firewall rules and networks belong
# to the network set-up, whose own tests cover them).
MUST_PASS = ["docker engine", "runtime", "cgroup", "disk bound", "seccomp", "launcher", "sandbox image",
             "redis", "postgresql", "migrations"]


def doctor(s: Settings, *args: str, **env: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "airlock.cli", "doctor", *args], cwd=ROOT,
                          env=worker_env(s, **env), capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout


def by_name(output: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(output)}


def engine_runc() -> str:
    client = docker.APIClient(version="auto")
    try:
        return next(c["Version"] for c in client.version()["Components"] if c["Name"] == "runc")
    finally:
        client.close()


@pytest.mark.integration
def test_doctor_checks_this_host(settings: Settings) -> None:
    code, out = doctor(settings, "--json")
    checks = by_name(out)
    assert list(checks) == CHECKS
    for name in MUST_PASS:
        assert checks[name]["status"] == "ok", checks[name]
    assert "EPERM" in checks["seccomp"]["detail"]
    assert code == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)

    runc = parse_runc_version(engine_runc())
    assert runc is not None
    open_cves = [k.cve for k in KNOWN_RUNC_CVES if k.affects(runc)]
    if open_cves:  # this host: runc 1.1.5, before the CVE-2024-21626 and 2025 fixes
        assert checks["runc"]["status"] in ("warn", "fail")
        assert all(cve in checks["runc"]["detail"] for cve in open_cves)
        _, accepted = doctor(settings, "--json", *[f"--allow-known-cve={c}" for c in open_cves])
        assert by_name(accepted)["runc"]["status"] == "warn"
    else:
        assert checks["runc"]["status"] == "ok"


@pytest.mark.integration
def test_doctor_fails_and_names_what_is_wrong(settings: Settings) -> None:
    with empty_database() as url:
        code, out = doctor(settings, AIRLOCK_DATABASE_URL=url,
                           AIRLOCK_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert code == 1
    table = {line.split("│")[1].strip(): line for line in out.splitlines()
             if line.startswith("│") and line.split("│")[1].strip()}
    assert "FAIL" in table["migrations"] and "airlock db upgrade" in table["migrations"]
    assert "FAIL" in table["redis"] and "ok" in table["postgresql"]
    assert "ok" in table["docker engine"]


@pytest.mark.integration
def test_doctor_fails_without_the_launcher_and_names_the_fix(settings: Settings,
                                                              tmp_path: Path) -> None:
    code, out = doctor(settings, "--json", AIRLOCK_LAUNCHER_PATH=str(tmp_path / "airlock-init"))
    launcher = by_name(out)["launcher"]
    assert code == 1 and launcher["status"] == "fail", launcher
    assert "missing" in launcher["detail"] and "scripts/build-launcher.sh" in launcher["detail"]


@pytest.mark.integration
def test_doctor_says_whether_the_kernel_has_apparmor(settings: Settings) -> None:
    from workers.apparmor import read_kernel

    _, out = doctor(settings, "--json")
    line = by_name(out)["apparmor"]
    if read_kernel().enabled:  # a host with AppArmor: setup-host loaded the profile
        assert line["status"] == "ok" and "airlock-job" in line["detail"], line
        return
    assert line["status"] == "warn", line
    assert line["detail"].startswith("the kernel has no AppArmor"), line
    assert "seccomp alone" in line["detail"]
    code, out = doctor(settings, "--json", AIRLOCK_APPARMOR="require")
    required = by_name(out)["apparmor"]
    assert code == 1 and required["status"] == "fail", required
    assert "AIRLOCK_APPARMOR=require refuses this host" in required["detail"]
