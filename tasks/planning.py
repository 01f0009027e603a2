"""Planning a job's container, pure: a resolved job and the settings in; the launch plan, the
launcher's payload and the result's provenance out. No engine, no database, no clock but the
``now`` it is given."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from base.errors import HostNotSafe
from config.seccomp import profile_sha256
from config.settings import Settings
from tasks import egress
from tasks.contract import JobLimits, ResolvedJob, resolve_limits
from workers import cgroup, inner_sandbox, pipes
from workers import labels as L
from workers.inner_sandbox import InnerSandbox
from workers.launcher import encode_payload
from workers.pool import PoolKey, launcher_wait_s
from workers.proxy_registry import Credential
from workers.spec import LaunchPlan, TmpfsSizes, job_labels

CLAIM_SLACK_S = 5.0  # added to an attempt's run deadline beyond start-up, timeout and backstop
BASE_ENV = {
    "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/appuser",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TMPDIR": "/tmp",
}


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What a worker knows of its host, the same for every job it plans: the seccomp profile
    as the engine gets it (and its hash), the OCI runtime by name, and the engine's versions;
    the agent profile's seccomp text (empty when it could not be derived)."""

    seccomp_json: str
    seccomp_sha256: str
    runtime: str = ""
    engine: Mapping[str, Any] = field(default_factory=dict)
    apparmor: str = ""  # the profile every container gets; empty: none (workers/apparmor.py)
    agent_seccomp_json: str = ""

    def seccomp_for(self, job: ResolvedJob) -> tuple[str, str]:
        """The profile's text and hash for the job: the agent profile for an inner sandbox."""
        if not job.inner_sandbox:
            return self.seccomp_json, self.seccomp_sha256
        if not self.agent_seccomp_json:
            raise HostNotSafe("the agent seccomp profile could not be derived on this worker:"
                              " agent jobs are refused")
        return self.agent_seccomp_json, profile_sha256(self.agent_seccomp_json)


def agent_seccomp(s: Settings) -> str:
    """The agent profile's text, or empty when it cannot be derived from the configured base
    (the preflight's inner-sandbox canary then says why, and agent jobs are refused)."""
    try:
        return s.agent_seccomp_json
    except (OSError, ValueError):
        return ""


def claim_overhead_s(s: Settings) -> float:
    """An attempt's run deadline is this plus the job's timeout after its claim (store.claim)."""
    return s.timeouts.startup_grace_s + s.timeouts.backstop_s + CLAIM_SLACK_S


def plan_for(s: Settings, host: HostFacts, job: ResolvedJob, *, name: str, uid: int, now: float,
             job_id: str = "", attempt: int = 0, role: str = L.ROLE_JOB) -> LaunchPlan:
    """A cold job's container (also the start of a pooled one's and a preflight canary's),
    running as ``uid`` (its own: workers/slots.py)."""
    net = egress.job_network(s, job.network, job.egress_domains)
    box, t = s.sandbox, s.timeouts
    inner = InnerSandbox(net.domains, job.secrets) if job.inner_sandbox else None
    return LaunchPlan(
        name=name, image=job.image, limits=job.limits,
        network_mode=net.mode, dns_options=net.dns_options, ro_binds=net.ro_binds,
        labels=job_labels(fleet=s.fleet, host=s.hostname, role=role, job=job_id,
                          attempt=attempt, created=now,
                          deadline=now + t.startup_grace_s + job.limits.timeout_s + t.backstop_s),
        seccomp_json=host.seccomp_for(job)[0], cgroup_parent=cgroup.parent_for(name),
        launcher_path=box.launcher_path, io_folder=pipes.folder(box.io_dir, name),
        uid=uid, rlimits={str(k): v for k, v in box.rlimits.items()},
        tmpfs=TmpfsSizes(box.tmpfs_tmp, box.tmpfs_var_tmp, box.tmpfs_run, box.shm_bytes),
        max_wait_s=int(t.startup_grace_s),
        runtime=host.runtime, apparmor=host.apparmor, inner_sandbox=inner,
    )


def pool_plan(s: Settings, host: HostFacts, key: PoolKey, *, name: str, uid: int, owner: str,
              now: float) -> LaunchPlan:
    """A warm-pool container's plan: a cold job's plan with the fleet's default limits, except
    its labels (role=pool, no job yet) and how long its launcher waits for a job."""
    limits = replace(resolve_limits(JobLimits(), s), disk_bytes=key.disk_bytes)
    job = ResolvedJob("", key.image, (), {}, {}, b"", limits, key.network)
    plan = plan_for(s, host, job, name=name, uid=uid, now=now, role=L.ROLE_POOL)
    wait_s = launcher_wait_s(s.pool.max_age_s)
    deadline = now + wait_s + s.timeouts.startup_grace_s + s.maximums.timeout_s + s.timeouts.backstop_s
    labels = dict(plan.labels) | {L.DEADLINE: f"{deadline:.3f}", L.OWNER: owner}
    return replace(plan, labels=labels, max_wait_s=wait_s)


def payload_for(job: ResolvedJob, s: Settings, secrets: Mapping[str, str] | None = None,
                credential: Credential | None = None) -> bytes:
    """The launcher's frame for the job, then the job's stdin. ``secrets``: the values of the
    secrets the job names, fetched for this start, and ``credential``: the attempt's proxy
    credential (the frame is their only way in). The network's variables (the proxy) and an
    inner sandbox's win over the job's own."""
    net = egress.job_network(s, job.network, job.egress_domains, credential)
    env = BASE_ENV | job.env | dict(secrets or {}) | dict(net.env)
    if job.inner_sandbox:
        env |= inner_sandbox.ENV
    return encode_payload(argv=job.argv, env=env, files=job.files, executable=job.executable,
                          deadline_s=job.limits.timeout_s + s.timeouts.backstop_s) + job.stdin


def provenance(s: Settings, host: HostFacts, job: ResolvedJob, uid: int,
               cpuset: str = "") -> dict[str, Any]:
    """What ran the job, stored beside its result (a secret by its name only); ``cpuset``: its
    cores (None: any)."""
    out: dict[str, Any] = {
        "image": job.image, "profile": job.profile, "host": s.hostname, "fleet": s.fleet,
        "runtime": host.runtime, "engine": dict(host.engine),
        "seccomp_sha256": host.seccomp_for(job)[1],
        "apparmor": host.apparmor or None, "limits": job.limits.as_dict(),
        "rlimits": {str(k): v for k, v in s.sandbox.rlimits.items()}, "uid": uid,
        "storage": s.storage, "network": job.network, "cpuset": cpuset or None,
    }
    if job.secrets:
        out["secrets"] = list(job.secrets)
    if job.inner_sandbox:
        net = egress.job_network(s, job.network, job.egress_domains)
        texts = inner_sandbox.texts(InnerSandbox(net.domains, job.secrets))
        out["inner_sandbox"] = {name: profile_sha256(text) for name, text in texts.items()}
    return out
