"""The container spec is a pure function: check it dict by dict."""

from __future__ import annotations

from dataclasses import replace

import pytest

from base.errors import HostNotSafe
from base.limits import Limits
from workers.engine import choose_runtime
from workers.spec import LaunchPlan, build_create_kwargs, job_labels

GiB = 1024**3
DEFAULT = Limits(timeout_s=30, cpus=2, memory_bytes=4 * GiB, pids=256, output_bytes=4 << 20,
                 disk_bytes=5 * GiB)


def plan(**changes: object) -> LaunchPlan:
    base = LaunchPlan(name="airlock-x", image="airlock/sandbox:latest", limits=DEFAULT,
                      labels=job_labels(fleet="f", host="h", role="job", job="j", attempt=2),
                      seccomp_json='{"defaultAction":"SCMP_ACT_ERRNO"}', cgroup_parent="/airlock/x",
                      launcher_path="/usr/local/libexec/airlock/airlock-init",
                      io_folder="/run/airlock/io/airlock-x", uid=2_000_000_007,
                      rlimits={"nofile": 8192, "nproc": 1024})
    return replace(base, **changes)  # type: ignore[arg-type]


def test_default_job_gets_the_security_design() -> None:
    hc = build_create_kwargs(plan())["host_config"]
    assert hc["CapDrop"] == ["ALL"] and hc["CapAdd"] == ["CHOWN", "SETUID", "SETGID"]
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["SecurityOpt"][1] == 'seccomp={"defaultAction":"SCMP_ACT_ERRNO"}'
    assert hc["ReadonlyRootfs"] is True and hc["Privileged"] is False
    assert (hc["CpuPeriod"], hc["CpuQuota"]) == (100_000, 200_000)
    assert hc["Memory"] == hc["MemorySwap"] == 4 * GiB
    assert hc["PidsLimit"] == 256
    assert hc["NetworkMode"] == "none"
    assert hc["LogConfig"]["Type"] == "none"
    assert hc["CgroupParent"] == "/airlock/x"


def test_tmpfs_sizes_and_flags() -> None:
    tmpfs = build_create_kwargs(plan())["host_config"]["Tmpfs"]
    assert tmpfs["/tmp"] == "rw,noexec,nosuid,nodev,size=1g,mode=1777"
    assert tmpfs["/var/tmp"].endswith("size=512m,mode=1777")
    assert tmpfs["/run"].endswith("size=64m,mode=0755")  # root's: the job cannot write there
    # Without bound volumes the job mounts are sized tmpfs of the disk bound.
    assert f"size={5 * GiB}" in tmpfs["/workspace"] and "uid=2000000007" in tmpfs["/workspace"]
    assert "gid=2000000007" in tmpfs["/workspace"]
    assert {"/opt/venv", "/home/appuser"} <= set(tmpfs)


def test_bound_volumes_replace_tmpfs_job_mounts() -> None:
    binds = {"/workspace": "/v/x/workspace", "/opt/venv": "/v/x/venv", "/home/appuser": "/v/x/home"}
    hc = build_create_kwargs(plan(binds=binds))["host_config"]
    assert "/v/x/workspace:/workspace:rw" in hc["Binds"]
    assert "/workspace" not in hc["Tmpfs"]


def test_each_limit_lands_in_the_host_config() -> None:
    limits = Limits(timeout_s=5, cpus=0.5, memory_bytes=64 << 20, pids=16, output_bytes=1024,
                    disk_bytes=32 << 20)
    hc = build_create_kwargs(plan(limits=limits))["host_config"]
    assert hc["CpuQuota"] == 50_000
    assert hc["Memory"] == hc["MemorySwap"] == 64 << 20
    assert hc["PidsLimit"] == 16


def test_container_is_non_root_waits_on_stdin_and_is_labelled() -> None:
    kw = build_create_kwargs(plan())
    assert kw["user"] == "2000000007:2000000007"  # its own uid and gid (workers/slots.py)
    # Nothing attached: the job's stdio are FIFOs the launcher opens (workers/pipes.py).
    assert kw["stdin_open"] is False and kw["detach"] is True and kw["tty"] is False
    # The launcher, waiting at most 900 s, with its stdin, stdout, stderr and status
    assert kw["command"] == ["/.airlock/init", "900", "/.airlock/in", "/.airlock/out",
                             "/.airlock/err", "/.airlock/status"]
    labels = kw["labels"]
    assert labels["org.airlock.managed"] == "true" and labels["org.airlock.job"] == "j"
    assert labels["org.airlock.attempt"] == "2" and labels["org.airlock.host"] == "h"
    assert labels["org.airlock.fleet"] == "f" and labels["org.airlock.name"] == "airlock-x"
    assert kw["environment"] == {"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"}
    assert kw["use_config_proxy"] is False


def test_a_job_without_egress_has_no_network_and_no_extras() -> None:
    kw = build_create_kwargs(plan())
    hc = kw["host_config"]
    assert kw["network_disabled"] is True and hc["NetworkMode"] == "none"
    assert "DnsOptions" not in hc and "Dns" not in hc and "Binds" not in hc


def test_the_launcher_is_the_hosts_binary_mounted_read_only_as_pid_1() -> None:
    kw = build_create_kwargs(plan(launcher_path="/opt/init", max_wait_s=0))
    # A Mount, not a Bind: a missing source fails the create (a Bind would make a folder).
    assert kw["host_config"]["Mounts"][0] == {
        "Type": "bind", "Source": "/opt/init", "Target": "/.airlock/init", "ReadOnly": True}
    assert kw["command"][:2] == ["/.airlock/init", "1"]  # waits at least a second
    assert kw["host_config"]["Init"] is False  # no docker-init: the launcher reaps


def test_the_stdio_fifos_and_identity_are_the_containers_own_bound_read_only() -> None:
    mounts = build_create_kwargs(plan(io_folder="/run/io/airlock-x"))["host_config"]["Mounts"]
    assert mounts[1:5] == [
        {"Type": "bind", "Source": f"/run/io/airlock-x/{name}", "Target": f"/.airlock/{name}",
         "ReadOnly": True} for name in ("in", "out", "err", "status")]
    assert mounts[5:] == [
        {"Type": "bind", "Source": f"/run/io/airlock-x/{name}", "Target": f"/etc/{name}",
         "ReadOnly": True} for name in ("passwd", "group")]


def test_rlimits_are_set_soft_and_hard_beside_no_core_dumps() -> None:
    ulimits = build_create_kwargs(plan())["host_config"]["Ulimits"]
    assert ulimits == [{"Name": "core", "Soft": 0, "Hard": 0},
                       {"Name": "nofile", "Soft": 8192, "Hard": 8192},
                       {"Name": "nproc", "Soft": 1024, "Hard": 1024}]


def test_an_egress_job_joins_the_workspace_network_and_nothing_else_changes() -> None:
    # Given the plan a worker makes for network="egress" (tasks/egress.py)
    egress = plan(network_mode="airlock-workspace", dns_options=("timeout:1", "attempts:1"),
                  ro_binds={"airlock-egress-ca": "/etc/airlock/egress-ca"})
    kw, hc = build_create_kwargs(egress), build_create_kwargs(egress)["host_config"]
    # Then it is on the workspace network, with fast-failing lookups and no DNS server of
    # its own, and the proxy's CA certificate mounted read-only
    assert kw["network_disabled"] is False and hc["NetworkMode"] == "airlock-workspace"
    assert hc["DnsOptions"] == ["timeout:1", "attempts:1"] and "Dns" not in hc
    assert hc["Binds"] == ["airlock-egress-ca:/etc/airlock/egress-ca:ro"]
    assert kw["environment"] == build_create_kwargs(plan())["environment"]  # proxy env: payload
    # And everything else is exactly a job without egress
    cold = build_create_kwargs(plan())
    for key in ("NetworkMode", "DnsOptions", "Binds"):
        hc.pop(key, None)
        cold["host_config"].pop(key, None)
    assert hc == cold["host_config"]
    assert {k: v for k, v in kw.items() if k not in ("host_config", "network_disabled")} == \
        {k: v for k, v in cold.items() if k not in ("host_config", "network_disabled")}


def test_read_only_extras_stay_read_only_beside_the_job_volumes() -> None:
    binds = {"/workspace": "/v/x/workspace"}
    hc = build_create_kwargs(plan(binds=binds, ro_binds={"ca-vol": "/etc/ca"}))["host_config"]
    assert hc["Binds"] == ["/v/x/workspace:/workspace:rw", "ca-vol:/etc/ca:ro"]


def test_the_runtime_is_the_plans_or_the_engines_default() -> None:
    assert "Runtime" not in build_create_kwargs(plan())["host_config"]  # the engine's default
    assert build_create_kwargs(plan(runtime="crun"))["host_config"]["Runtime"] == "crun"


def test_the_engines_default_runtime_unless_one_is_named_and_registered() -> None:
    assert choose_runtime("", ["runc", "crun"], "runc") == "runc"
    assert choose_runtime("", ["runc", "runsc"], "runsc") == "runsc"  # the engine's default
    assert choose_runtime("", [], "") == "runc"  # an engine that does not say
    assert choose_runtime("crun", ["runc", "crun"], "runc") == "crun"
    with pytest.raises(HostNotSafe, match=r"'runsc'.*has: crun, runc"):
        choose_runtime("runsc", ["crun", "runc"], "runc")


def test_the_cores_are_named_only_when_a_set_was_chosen() -> None:
    assert "CpusetCpus" not in build_create_kwargs(plan())["host_config"]
    assert build_create_kwargs(plan(cpuset_cpus="0,1"))["host_config"]["CpusetCpus"] == "0,1"
