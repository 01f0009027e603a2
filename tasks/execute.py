"""One job, start to end, as plain functions (no Celery here): claim, run, record, announce."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from airlock.errors import AirlockError, DatabaseUnavailable, InfrastructureError
from config.settings import Settings
from tasks import egress, metrics
from tasks.context import WorkerContext
from tasks.contract import JobLimits, ResolvedJob, resolve, resolve_limits
from tasks.lease import LeaseKeeper
from tasks.relay import Publisher, Relay
from tasks.store import Claim, Outcome
from workers import cgroup, pipes, pool, runner
from workers import labels as L
from workers.launcher import encode_payload
from workers.pool import PoolKey
from workers.runner import RunOutcome, Sandbox
from workers.spec import LaunchPlan, TmpfsSizes, job_labels
from workers.verdict import Verdict, classify

log = structlog.get_logger(__name__)
DEFAULT_BACKSTOP_S: float = Settings.model_fields["backstop_s"].default
CLAIM_SLACK_S = 5.0  # added to an attempt's run deadline beyond start-up, timeout and backstop
BASE_ENV = {
    "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/appuser",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TMPDIR": "/tmp",
}


def claim_overhead_s(s: Settings) -> float:
    """An attempt's run deadline is this plus the job's timeout after its claim (store.claim)."""
    return s.startup_grace_s + s.backstop_s + CLAIM_SLACK_S


def plan_for(ctx: WorkerContext, job: ResolvedJob, *, name: str, job_id: str = "",
             attempt: int = 0, role: str = "job") -> LaunchPlan:
    s = ctx.settings
    now = time.time()
    net = egress.job_network(s, job.network)
    return LaunchPlan(
        name=name, image=job.image, limits=job.limits,
        network_mode=net.mode, dns_options=net.dns_options, ro_binds=net.ro_binds,
        labels=job_labels(fleet=s.fleet, host=s.hostname, role=role, job=job_id,
                          attempt=attempt, created=now,
                          deadline=now + s.startup_grace_s + job.limits.timeout_s + s.backstop_s),
        seccomp_json=ctx.seccomp_json, cgroup_parent=cgroup.parent_for(name),
        launcher_path=s.launcher_path, io_folder=pipes.folder(s.io_dir, name),
        user=f"{s.job_uid}:{s.job_gid}",
        tmpfs=TmpfsSizes(s.tmpfs_tmp, s.tmpfs_var_tmp, s.tmpfs_run, s.shm_bytes),
        max_wait_s=int(s.startup_grace_s),
        runtime=ctx.runtime,
    )


def pool_plan(ctx: WorkerContext, key: PoolKey, name: str, owner: str) -> LaunchPlan:
    """A warm-pool container's plan: a cold job's plan with the fleet's default limits, except
    its labels (role=pool, no job yet) and how long its launcher waits for a job."""
    s = ctx.settings
    limits = replace(resolve_limits(JobLimits(), s), disk_bytes=key.disk_bytes)
    job = ResolvedJob("", key.image, (), {}, {}, b"", limits, key.network)
    plan = _in_holder(ctx, plan_for(ctx, job, name=name, role=L.ROLE_POOL))
    wait_s = pool.launcher_wait_s(s.pool_max_age_s)
    deadline = time.time() + wait_s + s.startup_grace_s + s.maximums.timeout_s + s.backstop_s
    labels = dict(plan.labels) | {L.DEADLINE: f"{deadline:.3f}", pool.OWNER: owner}
    return replace(plan, labels=labels, max_wait_s=wait_s)


def payload_for(job: ResolvedJob, backstop_s: float = DEFAULT_BACKSTOP_S, *,
                network_env: Mapping[str, str] | None = None) -> bytes:
    env = BASE_ENV | job.env | dict(network_env or {})  # the network's (the proxy) wins
    return encode_payload(argv=job.argv, env=env, files=job.files,
                          deadline_s=job.limits.timeout_s + backstop_s) + job.stdin


def execute_job(job_id: str, ctx: WorkerContext) -> str:
    """Run one delivery of a job. Returns what happened; raises only InfrastructureError."""
    s = ctx.settings
    claim = ctx.store.claim(job_id, host=s.hostname, lease_s=s.lease_s,
                            overhead_s=claim_overhead_s(s))
    if claim is None:
        if ctx.store.end_cancelled(job_id):
            log.info("job.cancelled_unclaimed", job_id=job_id)
            _relay(ctx).publisher(job_id).end({"verdict": str(Verdict.CANCELLED)})
            return "cancelled"
        log.info("job.not_claimed", job_id=job_id)  # finished, cancelled, or another's: dropped
        return "not_claimed"
    log_ = log.bind(job_id=job_id, attempt=claim.attempt)
    publisher = _relay(ctx).publisher(job_id)
    if claim.unfinished >= s.max_attempts:
        error = f"gave up after {claim.unfinished} attempts whose worker died (a poison job?)"
        _record(ctx, claim, Outcome(verdict=Verdict.ERROR, error=error), publisher)
        return "gave_up"
    try:
        _, job = resolve(claim.spec, s)
        egress.check_allowed(job.network, s)
    except AirlockError as exc:
        _record(ctx, claim, Outcome(verdict=Verdict.ERROR, error=str(exc)), publisher)
        return "invalid"
    teardown = Teardown()
    with LeaseKeeper(ctx.store, ctx.redis, job_id, claim.attempt, s.lease_s) as lease:
        try:
            outcome, phases = _run(ctx, claim, job, publisher, lease, teardown)
        except InfrastructureError as exc:
            log_.warning("job.infrastructure_error", error=str(exc))
            _note_removed(ctx, claim, teardown)
            ctx.store.release(job_id, claim.attempt, "infra_error")
            raise
        except Exception as exc:
            log_.exception("job.internal_error")
            error = f"{type(exc).__name__}: {exc}"
            _record(ctx, claim, Outcome(verdict=Verdict.ERROR, error=error), publisher,
                    container_removed=teardown.removed)
            return "error"
        except BaseException:
            # A shutdown signal (SystemExit) mid-job: the container is gone (``_run``'s
            # finally); hand the job back so its redelivery can claim it at once.
            log_.warning("job.interrupted")
            _note_removed(ctx, claim, teardown)
            _release_quietly(ctx, claim, "interrupted")
            raise
        if lease.stale:
            log_.warning("job.stale_attempt")
            _note_removed(ctx, claim, teardown)
            return "stale"
        # Still under the lease: a database outage during the write is waited out.
        _record(ctx, claim, _outcome(ctx, claim, job, outcome, phases), publisher,
                container_removed=teardown.removed)
    return "finished"


@dataclass
class Teardown:
    """Whether the attempt's container was removed (set by ``_run``'s ``finally``). The result
    write records it; the paths that write no result record it on their own."""

    removed: bool = False


def _note_removed(ctx: WorkerContext, claim: Claim, teardown: Teardown) -> None:
    if teardown.removed:
        try:
            ctx.store.container_removed(claim.job_id, claim.attempt)
        except AirlockError:
            pass  # evidence only; the reaper double-checks the engine


def _release_quietly(ctx: WorkerContext, claim: Claim, reason: str) -> None:
    try:
        ctx.store.release(claim.job_id, claim.attempt, reason)
    except AirlockError as exc:
        log.warning("job.release_failed", job_id=claim.job_id, error=str(exc))


def _relay(ctx: WorkerContext) -> Relay:
    if ctx.relay is None:
        ctx.relay = Relay.for_settings(ctx.redis, ctx.settings)
    return ctx.relay


def _run(ctx: WorkerContext, claim: Claim, job: ResolvedJob, publisher: Publisher,
         lease: LeaseKeeper, teardown: Teardown) -> tuple[RunOutcome, dict[str, Any]]:
    t0 = time.monotonic()
    sandbox: Sandbox | None = None
    phases: dict[str, Any] = {
        "queue_wait_ms": int((claim.claimed_at - claim.queued_at).total_seconds() * 1000)}
    try:
        sandbox = _acquire(ctx, claim, job)
        phases["pooled"] = sandbox.plan.labels.get("org.airlock.role") == "pool"
        s = ctx.settings
        if not ctx.store.container_started(claim.job_id, claim.attempt, sandbox.container_id,
                                           lease_s=s.lease_s,
                                           need_s=job.limits.timeout_s + s.backstop_s):
            # Fed now, the job could outlive the attempt's run deadline, after which another
            # attempt may take it over; or another already has. Never fed: removed below.
            raise InfrastructureError("the attempt lost its job or its run deadline before the"
                                      " container was ready")
        t1 = time.monotonic()
        phases["container_ready_ms"] = int((t1 - t0) * 1000)
        payload = payload_for(job, s.backstop_s,
                              network_env=egress.job_network(s, job.network).env)
        outcome = runner.run(sandbox, payload, job.limits,
                             keep_bytes=ctx.settings.keep_output_bytes,
                             sink=publisher.chunk, hold=publisher.hold, cancel=lease.stop,
                             volumes=ctx.volumes)
        phases["run_ms"] = outcome.wall_ms
        phases["collect_ms"] = int((time.monotonic() - t1) * 1000) - outcome.wall_ms
        return outcome, phases
    finally:
        if sandbox is not None:  # removed before the result is written, pooled or cold
            t2 = time.monotonic()
            removed = runner.destroy(sandbox, ctx.volumes)
            phases["destroy_ms"] = int((time.monotonic() - t2) * 1000)
            teardown.removed = removed
            if not removed:
                _tainted(ctx, sandbox)


def _in_holder(ctx: WorkerContext, plan: LaunchPlan) -> LaunchPlan:
    """Join this process's namespace holder for the plan's network, where holders apply."""
    if ctx.holders is None:
        return plan
    mode = ctx.holders.network_mode(plan.network_mode, plan.dns_options)
    if mode == plan.network_mode:
        return plan
    # Docker refuses a hostname with a container network mode; the holder's is "sandbox", and
    # its resolv.conf (made with these DNS options) is the one the job sees.
    return replace(plan, network_mode=mode, hostname="", dns_options=())


def _tainted(ctx: WorkerContext, sandbox: Sandbox) -> None:
    """A container that may still run shares no namespace with a later job: retire its holder
    and the pooled containers waiting in it."""
    if ctx.holders is not None:
        ctx.holders.done(sandbox.plan.network_mode, clean=False)
    if ctx.pool is not None and sandbox.plan.network_mode.startswith("container:"):
        ctx.pool.discard_joined(sandbox.plan.network_mode)


def _acquire(ctx: WorkerContext, claim: Claim, job: ResolvedJob) -> Sandbox:
    if ctx.pool is not None:
        pooled: Sandbox | None = ctx.pool.take(job, claim.job_id, claim.attempt)
        if pooled is not None:
            return pooled
    name = f"airlock-{claim.job_id[:8]}-{claim.attempt}-{int(time.time() * 1000) % 100000}"
    plan = plan_for(ctx, job, name=name, job_id=claim.job_id, attempt=claim.attempt)
    return runner.prepare(ctx.api, _in_holder(ctx, plan), ctx.volumes)


def _outcome(ctx: WorkerContext, claim: Claim, job: ResolvedJob, run: RunOutcome,
             phases: dict[str, Any]) -> Outcome:
    verdict = classify(run.evidence)
    return Outcome(
        verdict=verdict, exit_code=run.evidence.exit_code, signal=run.evidence.signal,
        stdout=run.stdout, stderr=run.stderr, stdout_bytes=run.stdout_total,
        stderr_bytes=run.stderr_total, wall_ms=run.wall_ms, cpu_ms=run.cpu_ms,
        peak_memory_bytes=run.peak_memory_bytes,
        evidence=run.evidence.as_dict() | {"disk_used_bytes": run.disk_used_bytes},
        phases=phases,
        provenance={
            "image": job.image, "profile": job.profile, "host": ctx.settings.hostname,
            "fleet": ctx.settings.fleet, "runtime": ctx.runtime, "engine": ctx.engine_info,
            "seccomp_sha256": ctx.seccomp_sha256, "limits": job.limits.as_dict(),
            "storage": ctx.settings.storage, "network": job.network,
        },
    )


def _record(ctx: WorkerContext, claim: Claim, outcome: Outcome, publisher: Publisher, *,
            container_removed: bool = False) -> None:
    t = time.monotonic()
    keep = ctx.settings.keep_output_bytes
    if not _finish_patiently(ctx, claim, outcome, keep, container_removed):
        log.warning("job.result_fenced", job_id=claim.job_id, attempt=claim.attempt)
        return
    persist_ms = int((time.monotonic() - t) * 1000)
    publisher.end({"verdict": str(outcome.verdict), "exit_code": outcome.exit_code,
                   "attempt": claim.attempt, "persist_ms": persist_ms})
    metrics.job_finished(str(outcome.verdict), (outcome.phases or {}) | {"persist_ms": persist_ms})
    log.info("job.finished", job_id=claim.job_id, attempt=claim.attempt,
             verdict=str(outcome.verdict), exit_code=outcome.exit_code, wall_ms=outcome.wall_ms)
    try:
        ctx.store.add_phases(claim.job_id, {"persist_ms": persist_ms})
    except AirlockError:
        pass  # a timing figure is not worth failing a finished job for


def _finish_patiently(ctx: WorkerContext, claim: Claim, outcome: Outcome, keep: int,
                      container_removed: bool = False) -> bool:
    """Write the result, waiting out a database outage for as long as the attempt would keep
    its container from the reaper (``lease_s + lease_grace_s``). A retried write is idempotent
    (a COMMIT whose reply was lost counts as done); past the patience the error propagates and
    the job is run again once its lease and run deadline have passed."""
    s = ctx.settings
    give_up = time.monotonic() + s.lease_s + s.lease_grace_s
    delay = 0.5
    while True:
        try:
            return ctx.store.finish(claim.job_id, claim.attempt, outcome, keep,
                                    container_removed=container_removed)
        except DatabaseUnavailable as exc:
            if time.monotonic() + delay > give_up:
                raise
            log.warning("job.result_write_retry", job_id=claim.job_id, error=str(exc))
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
