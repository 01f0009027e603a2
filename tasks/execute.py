"""One delivery of a job, start to end, as plain functions (no Celery here): claim it, run an
attempt (``tasks.attempt``), and conclude: a result, a hand-back, or nothing (stale)."""

from __future__ import annotations

from dataclasses import replace

import structlog

from base.errors import AirlockError, HostNotSafe, InfrastructureError
from base.ids import JobId
from tasks import egress, egress_access, preflight
from tasks.attempt import AttemptResult, run_attempt, teardown
from tasks.context import WorkerContext
from tasks.contract import ResolvedJob, resolve
from tasks.lease import LeaseKeeper
from tasks.planning import claim_overhead_s
from tasks.relay import Publisher
from tasks.results import outcome_of, record
from tasks.store import Claim, Outcome
from workers.verdict import Verdict

log = structlog.get_logger(__name__)


def execute_job(job_id: JobId, ctx: WorkerContext) -> str:
    """Run one delivery of a job. Returns what happened; raises only InfrastructureError
    (and a shutdown's BaseException, after handing the job back)."""
    s = ctx.settings
    claim = ctx.store.claim(job_id, host=s.hostname, lease_s=s.timeouts.lease_s,
                            overhead_s=claim_overhead_s(s))
    if claim is None:
        return _unclaimed(ctx, job_id)
    publisher = ctx.live_relay().publisher(job_id)
    if claim.unfinished >= s.timeouts.max_attempts:
        error = f"gave up after {claim.unfinished} attempts whose worker died (a poison job?)"
        record(ctx, claim, Outcome(verdict=Verdict.ERROR, error=error), publisher)
        return "gave_up"
    try:
        _, job = resolve(claim.spec, s)
        egress.check_allowed(job.network, s)
        check_inner_sandbox(job)
        secrets = ctx.secrets.values(claim.tenant, job.secrets) if job.secrets else {}
        if job.network == "egress":
            job = replace(job, egress_domains=egress_access.tenant_domains(
                s, ctx.store.engine, claim.tenant))
    except InfrastructureError:  # PostgreSQL, reading the secrets: the job goes back
        _release_quietly(ctx, claim, "infra_error")
        raise
    except AirlockError as exc:
        record(ctx, claim, Outcome(verdict=Verdict.ERROR, error=str(exc)), publisher)
        return "invalid"
    with LeaseKeeper(ctx.store, ctx.redis, job_id, claim.attempt, s.timeouts.lease_s) as lease:
        attempt = run_attempt(ctx, claim, job, publisher, lease, secrets)
        try:
            return _conclude(ctx, claim, job, attempt, publisher, lease)
        finally:
            teardown(ctx, claim, attempt)
            if attempt.spool is not None:
                attempt.spool.remove()


def check_inner_sandbox(job: ResolvedJob) -> None:
    """A job of an inner-sandbox profile runs only where this worker's preflight proved the
    inner sandbox holds (tasks/inner_canary.py)."""
    if not job.inner_sandbox:
        return
    why = preflight.inner_refusal(job.profile)
    if why is not None:
        raise HostNotSafe(f"profile {job.profile!r}: the inner sandbox (layer 6) does not hold on"
                          f" this host, so its jobs are refused here: {why}")


def _unclaimed(ctx: WorkerContext, job_id: JobId) -> str:
    if ctx.store.end_cancelled(job_id):
        log.info("job.cancelled_unclaimed", job_id=job_id)
        ctx.live_relay().publisher(job_id).end({"verdict": str(Verdict.CANCELLED)})
        return "cancelled"
    log.info("job.not_claimed", job_id=job_id)  # finished, cancelled, or another's: dropped
    return "not_claimed"


def _conclude(ctx: WorkerContext, claim: Claim, job: ResolvedJob, attempt: AttemptResult,
              publisher: Publisher, lease: LeaseKeeper) -> str:
    log_ = log.bind(job_id=claim.job_id, attempt=claim.attempt)
    failure = attempt.failure
    if isinstance(failure, InfrastructureError):
        log_.warning("job.infrastructure_error", error=str(failure))
        _note_removed(ctx, claim, attempt)
        ctx.store.release(claim.job_id, claim.attempt, "infra_error")
        raise failure
    if isinstance(failure, Exception):
        log_.error("job.internal_error", exc_info=failure)
        error = f"{type(failure).__name__}: {failure}"
        record(ctx, claim, Outcome(verdict=Verdict.ERROR, error=error), publisher,
               container_removed=attempt.removed)
        return "error"
    if failure is not None:
        # A shutdown signal (SystemExit) mid-job: the container is gone; hand the job back so
        # its redelivery can claim it at once.
        log_.warning("job.interrupted")
        _note_removed(ctx, claim, attempt)
        _release_quietly(ctx, claim, "interrupted")
        raise failure
    assert attempt.run is not None
    if lease.stale:
        log_.warning("job.stale_attempt")
        _note_removed(ctx, claim, attempt)
        return "stale"
    # Still under the lease: a database outage during the write is waited out.
    record(ctx, claim, outcome_of(ctx, job, attempt.run, attempt.phases, attempt.files,
                                  attempt.egress_bytes),
           publisher, container_removed=attempt.removed, spool=attempt.spool, files=attempt.files)
    return "finished"


def _note_removed(ctx: WorkerContext, claim: Claim, attempt: AttemptResult) -> None:
    if attempt.removed:
        try:
            ctx.store.container_removed(claim.job_id, claim.attempt)
        except AirlockError:
            pass  # evidence only; the reaper double-checks the engine


def _release_quietly(ctx: WorkerContext, claim: Claim, reason: str) -> None:
    try:
        ctx.store.release(claim.job_id, claim.attempt, reason)
    except AirlockError as exc:
        log.warning("job.release_failed", job_id=claim.job_id, error=str(exc))
