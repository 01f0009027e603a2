"""One attempt at a claimed job: a container (pooled or cold), the job fed and run, the
container destroyed whatever happened. Returns what it saw as an ``AttemptResult``; deciding
what that means for the job (a result, a retry, a hand-back) is ``tasks.execute``'s.

A job that ran to its end keeps its container until its result is written (``teardown``,
called by the caller in a ``finally``): the client sees the result as soon as the exit status
and counters are known, and the removal follows. On any failure it is removed here."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from base.errors import AirlockError, InfrastructureError
from tasks import egress_access, planning
from tasks.context import WorkerContext
from tasks.contract import ResolvedJob
from tasks.lease import LeaseKeeper
from tasks.relay import Publisher
from tasks.store import Claim
from workers import collect, runner
from workers import labels as L
from workers.collecting import CollectCaps, Collection, refused_all
from workers.proxy_registry import Credential
from workers.runner import RunOutcome, Sandbox
from workers.spool import Spool

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """``run`` is the job's outcome when it ran to its end; else ``failure`` says what stopped
    the attempt (re-raised by the caller). ``removed``: its container is gone."""

    run: RunOutcome | None
    phases: dict[str, Any] = field(default_factory=dict)
    removed: bool = False
    failure: BaseException | None = None
    spool: Spool | None = None  # the output, whole, until the result is written; then removed
    files: Collection | None = None  # what the job named to collect (its bytes in the spool)
    egress_bytes: int | None = None  # what the egress proxy delivered to it (None: no egress)
    sandbox: Sandbox | None = None  # the container still to remove (``teardown``)


def run_attempt(ctx: WorkerContext, claim: Claim, job: ResolvedJob, publisher: Publisher,
                lease: LeaseKeeper, secrets: Mapping[str, str] | None = None) -> AttemptResult:
    """``secrets``: the values of the job's secrets, for its payload only."""
    t0, started = time.monotonic(), time.time()
    phases: dict[str, Any] = {
        "queue_wait_ms": int((claim.claimed_at - claim.queued_at).total_seconds() * 1000)}
    sandbox: Sandbox | None = None
    run: RunOutcome | None = None
    failure: BaseException | None = None
    removed = False
    spool: Spool | None = None
    files: Collection | None = None
    credential: Credential | None = None
    early = ctx.settings.sandbox.remove_after_result  # files need it stopped: collect waits
    try:
        sandbox = _acquire(ctx, claim, job)
        phases["pooled"] = sandbox.plan.labels.get(L.ROLE) == L.ROLE_POOL
        _fence(ctx, claim, job, sandbox)
        spool = Spool(ctx.settings.sandbox.spool_dir, sandbox.plan.name).open()
        t1 = time.monotonic()
        phases["container_ready_ms"] = int((t1 - t0) * 1000)
        credential = egress_access.grant(ctx.settings, claim, job)
        payload = planning.payload_for(job, ctx.settings, secrets, credential)
        run = runner.run(sandbox, payload, job.limits,
                         keep_bytes=ctx.settings.caps.keep_output_bytes, sink=publisher.chunk,
                         hold=publisher.hold, cancel=lease.stop, volumes=ctx.volumes,
                         spool=spool, wait_exit=bool(job.collect) or not early)
        phases["run_ms"] = run.wall_ms
        phases["collect_ms"] = int((time.monotonic() - t1) * 1000) - run.wall_ms
        files = _collect_files(ctx, job, sandbox, run, spool, phases)
    except BaseException as exc:  # a shutdown's SystemExit too: the caller decides, re-raises
        failure = exc
    finally:
        egress_access.revoke(ctx.settings, credential)  # the job's way out ends with it
        if sandbox is not None and (failure is not None or not early):  # else: teardown
            removed = _destroy(ctx, sandbox, phases)
            sandbox = None
    egress = egress_access.bytes_used(ctx.api, credential, started) if run is not None else None
    return AttemptResult(run if failure is None else None, phases, removed, failure, spool, files,
                         egress, sandbox)


def teardown(ctx: WorkerContext, claim: Claim, attempt: AttemptResult) -> None:
    """Remove the container an attempt kept past its result, and note it (with how long the
    removal took) on the attempt's row and the job's phases. Never raises an AirlockError."""
    if attempt.sandbox is None:
        return
    phases: dict[str, Any] = {}
    if _destroy(ctx, attempt.sandbox, phases):
        try:
            ctx.store.removed_after(claim.job_id, claim.attempt, phases)
        except AirlockError as exc:  # evidence only; the reaper double-checks the engine
            log.warning("job.removal_unrecorded", job_id=claim.job_id, error=str(exc))


def _collect_files(ctx: WorkerContext, job: ResolvedJob, sandbox: Sandbox, run: RunOutcome,
                   spool: Spool, phases: dict[str, Any]) -> Collection | None:
    """The files the job named, read from its volume once its container has stopped and
    before the volume goes. Whatever happens here, the job's verdict stays its own."""
    if not job.collect:
        return None
    t = time.monotonic()
    if not run.stopped:
        files = refused_all(job.collect, "the job's container was not seen to stop: nothing"
                                         " was read from it")
    else:
        try:
            files = collect.from_volume(sandbox.volume.path, job.collect,
                                        CollectCaps(**ctx.settings.collect.model_dump()), spool)
        except Exception as exc:
            log.warning("job.collect_failed", container=sandbox.plan.name, error=repr(exc))
            files = refused_all(job.collect, f"collecting failed: {type(exc).__name__}")
    phases["files_ms"] = int((time.monotonic() - t) * 1000)
    return files


def _fence(ctx: WorkerContext, claim: Claim, job: ResolvedJob, sandbox: Sandbox) -> None:
    """Record the container; feed it only while the attempt owns the job with time to spare.
    Fed now, the job could outlive the attempt's run deadline, after which another attempt
    may take it over (or another already has): then it is removed unfed."""
    s = ctx.settings
    if not ctx.store.container_started(claim.job_id, claim.attempt, sandbox.container_id,
                                       lease_s=s.timeouts.lease_s,
                                       need_s=job.limits.timeout_s + s.timeouts.backstop_s):
        raise InfrastructureError("the attempt lost its job or its run deadline before the"
                                  " container was ready")


def _destroy(ctx: WorkerContext, sandbox: Sandbox, phases: dict[str, Any]) -> bool:
    t = time.monotonic()
    removed = runner.destroy(sandbox, ctx.volumes)
    phases["destroy_ms"] = int((time.monotonic() - t) * 1000)
    if not removed:
        _tainted(ctx, sandbox)
    return removed


def from_pool(ctx: WorkerContext, claim: Claim, job: ResolvedJob) -> Sandbox | None:
    """A warm container for the job, if one is ready; never for an inner sandbox, whose
    container is made for its job (its settings, its seccomp profile, its /proc), even where
    its image is a pooled one's."""
    if ctx.pool is None or job.inner_sandbox:
        return None
    pooled: Sandbox | None = ctx.pool.take(job, claim.job_id, claim.attempt)
    return pooled


def _acquire(ctx: WorkerContext, claim: Claim, job: ResolvedJob) -> Sandbox:
    pooled = from_pool(ctx, claim, job)
    if pooled is not None:
        return pooled
    now = time.time()
    name = f"airlock-{claim.job_id[:8]}-{claim.attempt}-{int(now * 1000) % 100000}"
    uid = ctx.slots.take(name, now).uid  # prepare gives it back on a failure, destroy after
    plan = planning.plan_for(ctx.settings, ctx.host, job, name=name, uid=uid, now=now,
                             job_id=claim.job_id, attempt=claim.attempt)
    return runner.prepare(ctx.api, ctx.in_holder(plan), ctx.volumes, ctx.slots, ctx.cpusets)


def _tainted(ctx: WorkerContext, sandbox: Sandbox) -> None:
    """A container that may still run shares no namespace with a later job: retire its holder
    and the pooled containers waiting in it."""
    if ctx.holders is not None:
        ctx.holders.done(sandbox.plan.network_mode, clean=False)
    if ctx.pool is not None and sandbox.plan.network_mode.startswith("container:"):
        ctx.pool.discard_joined(sandbox.plan.network_mode)
