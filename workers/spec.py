"""The container spec: a pure function from a launch plan to Docker's create arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from base.limits import Limits
from workers import identity, inner_sandbox, pipes
from workers import labels as L
from workers.inner_sandbox import InnerSandbox
from workers.launcher import INIT_PATH, launcher_command

CAPABILITIES_KEPT = ("CHOWN", "SETUID", "SETGID")
JOB_MOUNTS = ("/workspace", "/opt/venv", "/home/appuser")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class TmpfsSizes:
    tmp: str = "1g"
    var_tmp: str = "512m"
    run: str = "64m"
    shm_bytes: int = 64 * 1024**2


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """Everything that decides how one job container is created."""

    name: str
    image: str
    limits: Limits
    labels: Mapping[str, str]
    seccomp_json: str
    cgroup_parent: str
    launcher_path: str  # the host's static launcher, bound read-only at INIT_PATH as PID 1
    io_folder: str  # the host folder of this container's FIFOs and identity files
    uid: int  # the job's own (workers/slots.py); its gid is the same number
    # Resource limits the kernel keeps per process (nofile, nproc, ...): RLIMIT_* by name.
    rlimits: Mapping[str, int] = field(default_factory=dict)
    network_mode: str = "none"  # or the workspace network, for a job with egress
    dns_options: tuple[str, ...] = ()  # resolv.conf options; never servers of the job's own
    # Read-only extras, host source -> container path (the egress proxy's CA certificate).
    ro_binds: Mapping[str, str] = field(default_factory=dict)
    tmpfs: TmpfsSizes = TmpfsSizes()
    # Host folder bound at each job mount; a mount missing here becomes a sized tmpfs.
    binds: Mapping[str, str] = field(default_factory=dict)
    job_tmpfs_size: int = 0
    max_wait_s: int = 900
    hostname: str = "sandbox"
    cpuset_cpus: str = ""  # the job's cores (workers/cpusets.py); empty: any core
    runtime: str = ""  # the OCI runtime (engine.runtime_for); empty: the engine's default
    apparmor: str = ""  # the AppArmor profile (workers/apparmor.py); empty: none named
    # An agent job's inner sandbox (layer 6): its settings files (and, without a network, an
    # /etc/hosts naming localhost) bound read-only, and /proc without the engine's masks, which
    # the kernel requires before it mounts a fresh procfs in a user namespace. The plan's
    # seccomp_json is then the agent profile.
    inner_sandbox: InnerSandbox | None = None

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.uid}"


def job_labels(*, fleet: str, host: str, role: str, job: str = "", attempt: int = 0,
               deadline: float = 0.0, created: float = 0.0) -> dict[str, str]:
    return {
        L.MANAGED: "true",
        L.FLEET: fleet,
        L.ROLE: role,
        L.JOB: job,
        L.ATTEMPT: str(attempt),
        L.HOST: host,
        L.DEADLINE: f"{deadline:.3f}",
        L.CREATED: f"{created:.3f}",
    }


def hardened(seccomp_json: str, runtime: str = "",
             capabilities: tuple[str, ...] = (), apparmor: str = "") -> dict[str, Any]:
    """The host config every container of Airlock's starts from (jobs, pooled containers,
    namespace holders): read-only root, no capability but ``capabilities`` (in the bounding
    set only, for a non-root user), no new privileges, Airlock's seccomp profile, a private
    IPC namespace, no log driver, never restarted, never privileged; and the AppArmor profile
    ``apparmor`` where the host applies one."""
    config: dict[str, Any] = {
        "ReadonlyRootfs": True,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true", "seccomp=" + seccomp_json],
        "Privileged": False,
        "IpcMode": "private",
        "LogConfig": {"Type": "none", "Config": {}},
        "RestartPolicy": {"Name": "no"},
        "AutoRemove": False,
    }
    if apparmor:
        config["SecurityOpt"].append("apparmor=" + apparmor)
    if capabilities:
        config["CapAdd"] = list(capabilities)
    if runtime:
        config["Runtime"] = runtime
    return config


def build_create_kwargs(plan: LaunchPlan) -> dict[str, Any]:
    """Arguments for ``APIClient.create_container``: host config included, nothing inferred."""
    limits = plan.limits
    # Modes said, not left to the runtime: runc gives a tmpfs its mount point's mode from the
    # image (/run 0755, root's: the job cannot write there), crun the tmpfs default (1777).
    tmpfs = {
        "/tmp": f"rw,noexec,nosuid,nodev,size={plan.tmpfs.tmp},mode=1777",
        "/var/tmp": f"rw,noexec,nosuid,nodev,size={plan.tmpfs.var_tmp},mode=1777",
        "/run": f"rw,noexec,nosuid,nodev,size={plan.tmpfs.run},mode=0755",
    }
    binds = {}
    for mount in JOB_MOUNTS:
        if mount in plan.binds:
            binds[plan.binds[mount]] = {"bind": mount, "mode": "rw"}
        else:
            tmpfs[mount] = (
                f"rw,exec,nosuid,nodev,size={plan.job_tmpfs_size or limits.disk_bytes},"
                f"uid={plan.uid},gid={plan.uid},mode=0700"
            )
    host_config: dict[str, Any] = hardened(plan.seccomp_json, plan.runtime, CAPABILITIES_KEPT,
                                               plan.apparmor) | {
        # Bind options cannot say nosuid/nodev: the volume filesystem is mounted with them.
        "Binds": [f"{src}:{m['bind']}:rw" for src, m in binds.items()]
        + [f"{src}:{dest}:ro" for src, dest in plan.ro_binds.items()],
        # The launcher, PID 1: a Mount, not a Bind, so a missing file on the host fails the
        # create instead of the engine making an empty directory there.
        "Mounts": [{"Type": "bind", "Source": plan.launcher_path, "Target": INIT_PATH,
                    "ReadOnly": True}, *pipes.mounts(plan.io_folder),
                   *identity.mounts(plan.io_folder)],
        "Tmpfs": tmpfs,
        "NetworkMode": plan.network_mode,
        "CpuPeriod": CPU_PERIOD_US,
        "CpuQuota": int(limits.cpus * CPU_PERIOD_US),
        "Memory": limits.memory_bytes,
        "MemorySwap": limits.memory_bytes,  # no swap: memory+swap equals memory
        "MemorySwappiness": 0,
        "OomKillDisable": False,
        "PidsLimit": limits.pids,
        "ShmSize": plan.tmpfs.shm_bytes,
        "Init": False,  # the launcher is PID 1 and reaps
        "CgroupParent": plan.cgroup_parent,
        "Ulimits": [{"Name": "core", "Soft": 0, "Hard": 0}] + [
            {"Name": name, "Soft": value, "Hard": value} for name, value in plan.rlimits.items()],
    }
    if plan.cpuset_cpus:
        host_config["CpusetCpus"] = plan.cpuset_cpus
    if not host_config["Binds"]:
        del host_config["Binds"]
    if plan.dns_options:
        host_config["DnsOptions"] = list(plan.dns_options)
    if plan.inner_sandbox is not None:
        # Empty, not absent (absent means the engine's defaults): docker-py has no parameter
        # for these, and sends the dict as it is (engine API >= 1.40).
        host_config |= {"MaskedPaths": [], "ReadonlyPaths": []}
        host_config["Mounts"] += inner_sandbox.mounts(plan.io_folder, plan.network_mode == "none")
    return {
        "image": plan.image,
        "command": launcher_command(plan.max_wait_s, pipes.launcher_stdio()),
        "name": plan.name,
        "hostname": plan.hostname,
        "user": plan.user,
        "working_dir": "/workspace",
        "environment": {"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"},
        "labels": dict(plan.labels) | {L.NAME: plan.name},
        # No attach: the job's stdio are the FIFOs above; the engine's stdin stays closed.
        "stdin_open": False,
        "detach": True,
        "use_config_proxy": False,
        "tty": False,
        "network_disabled": plan.network_mode == "none",
        "host_config": host_config,
    }
