"""The job containers' AppArmor profile: it compiles (apparmor_parser -Q, no kernel support
needed), it denies what the security design says, and a worker applies it only where the
kernel can (and refuses a host that cannot when told to require it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from base.errors import HostNotSafe
from config.settings import Settings
from tasks.context import applied_apparmor
from tasks.startup import check_apparmor
from workers.apparmor import PROFILE_SOURCE, Kernel, decide, read_kernel
from workers.spec import hardened

LOADED = Kernel(True, {"airlock-job": "enforce", "docker-default": "enforce"})


def test_the_profile_compiles_without_loading() -> None:
    parser = shutil.which("apparmor_parser")
    assert parser, "apparmor_parser missing: scripts/setup-host.sh installs Debian's apparmor"
    done = subprocess.run([parser, "-Q", "-K", str(PROFILE_SOURCE)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_broken_profile_does_not_compile(tmp_path: Path) -> None:
    # The compile above is worth something only if the parser reads the rules it is given.
    broken = tmp_path / "broken"
    broken.write_text(PROFILE_SOURCE.read_text().replace("deny ptrace,", "deny ptrace everything,"))
    done = subprocess.run(["apparmor_parser", "-Q", "-K", str(broken)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "error" in done.stderr.lower()


def test_the_profile_denies_mount_ptrace_proc_and_sys_writes_raw_and_packet_sockets() -> None:
    rules = {line.strip() for line in PROFILE_SOURCE.read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")}
    for rule in ("deny mount,", "deny umount,", "deny pivot_root,", "deny ptrace,",
                 "deny @{PROC}/** wl,", "deny /sys/** wl,", "deny network raw,",
                 "deny network packet,"):
        assert rule in rules, rule
    assert re.search(r"^profile airlock-job flags=", PROFILE_SOURCE.read_text(), re.M)
    # Nothing granted beyond what jobs need: no capability past the container's bounding set.
    granted = {r.split()[1].rstrip(",") for r in rules if r.startswith("capability ")}
    assert granted == {"chown", "setuid", "setgid"}


@pytest.mark.parametrize(("mode", "kernel", "applied", "why"), [
    ("auto", LOADED, "airlock-job", None),
    ("require", LOADED, "airlock-job", None),
    ("auto", Kernel(False, {}), "", "the kernel has no AppArmor"),
    ("auto", Kernel(True, {"docker-default": "enforce"}), "", "profile airlock-job is not loaded"),
    ("auto", Kernel(True, {"airlock-job": "complain"}), "", "in complain mode"),
    ("off", LOADED, "", "AIRLOCK_APPARMOR=off"),
])
def test_the_profile_is_applied_only_where_the_kernel_enforces_it(
        mode: str, kernel: Kernel, applied: str, why: str | None) -> None:
    profile, reason = decide(mode, "airlock-job", kernel)
    assert profile == applied
    assert (reason is None) if why is None else (reason is not None and why in reason)


def test_a_worker_resolves_apparmor_at_start_and_every_container_gets_it() -> None:
    on = check_apparmor(Settings(), LOADED)
    assert applied_apparmor(on) == "airlock-job"
    assert "apparmor=airlock-job" in hardened("{}", apparmor=applied_apparmor(on))["SecurityOpt"]
    off = check_apparmor(Settings(), Kernel(False, {}))
    assert applied_apparmor(off) == ""
    assert not any(o.startswith("apparmor") for o in hardened("{}")["SecurityOpt"])


def test_a_worker_that_requires_apparmor_refuses_a_kernel_without_it() -> None:
    with pytest.raises(HostNotSafe, match=r"AppArmor required .*the kernel has no AppArmor"):
        check_apparmor(Settings(apparmor="require"), Kernel(False, {}))


def test_the_kernel_is_read_from_its_files(tmp_path: Path) -> None:
    enabled, profiles = tmp_path / "enabled", tmp_path / "profiles"
    assert read_kernel(enabled, profiles) == Kernel(False, {})  # no AppArmor module at all
    enabled.write_text("Y\n")
    profiles.write_text("airlock-job (enforce)\ndocker-default (enforce)\nx (complain)\n")
    assert read_kernel(enabled, profiles) == Kernel(True, {
        "airlock-job": "enforce", "docker-default": "enforce", "x": "complain"})
