"""A finished attempt's result: its verdict and evidence as one ``Outcome``, written fenced by
the attempt (patiently through a database outage), then announced to the job's readers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog
import zstandard

from base.errors import AirlockError, DatabaseUnavailable, ObjectStoreUnavailable
from tasks import blobs, metrics, planning
from tasks.context import WorkerContext
from tasks.contract import ResolvedJob
from tasks.relay import Publisher
from tasks.store import Claim, Outcome
from workers.collecting import Collection
from workers.runner import RunOutcome
from workers.spool import STREAMS, Spool
from workers.verdict import classify

log = structlog.get_logger(__name__)


def outcome_of(ctx: WorkerContext, job: ResolvedJob, run: RunOutcome,
               phases: dict[str, Any], files: Collection | None = None,
               egress_bytes: int | None = None) -> Outcome:
    """The result to store for a job that ran to its end (and what it collected, and what
    came to it through the egress proxy)."""
    return Outcome(
        verdict=classify(run.evidence), exit_code=run.evidence.exit_code,
        signal=run.evidence.signal, stdout=run.stdout, stderr=run.stderr,
        stdout_bytes=run.stdout_total, stderr_bytes=run.stderr_total, wall_ms=run.wall_ms,
        cpu_ms=run.cpu_ms, peak_memory_bytes=run.peak_memory_bytes, egress_bytes=egress_bytes,
        stdout_dropped=run.stdout_dropped, stderr_dropped=run.stderr_dropped,
        evidence=run.evidence.as_dict() | {"disk_used_bytes": run.disk_used_bytes},
        phases=phases, provenance=planning.provenance(ctx.settings, ctx.host, job, run.uid, run.cpuset),
        files=files.summary() if files is not None else None,
    )


def record(ctx: WorkerContext, claim: Claim, outcome: Outcome, publisher: Publisher, *,
           container_removed: bool = False, spool: Spool | None = None,
           files: Collection | None = None) -> None:
    """Store the result (the output whole, from ``spool``, past the row's head, and the
    collected ``files`` there), then end the job's live stream with its verdict."""
    t = time.monotonic()
    if spool is not None:
        outcome = replace(outcome, kept_whole=True)
    if not _finish_patiently(ctx, claim, outcome, container_removed, spool, files):
        log.warning("job.result_fenced", job_id=claim.job_id, attempt=claim.attempt)
        if spool is not None:
            _drop(ctx, claim, ctx.outputs.drop_attempt)
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


def _store_whole(ctx: WorkerContext, claim: Claim, spool: Spool,
                 files: Collection | None) -> None:
    """Each stream longer than the row's head, whole, and the collected files, as frames of
    the attempt (the files' manifest after their frames)."""
    keep = ctx.settings.caps.keep_output_bytes
    for stream in STREAMS:
        if spool.sizes[stream] > keep:
            ctx.outputs.put(claim.job_id, claim.attempt, blobs.frames(stream, spool.chunks(stream)))
    if files is not None and files.entries:
        try:
            ctx.outputs.put_files(claim.job_id, claim.attempt, files, spool)
        except (OSError, zstandard.ZstdError) as exc:  # the spool, on the host's disk
            raise _FilesUnkept(f"the worker could not read them back from its spool: {exc}") \
                from exc


class _FilesUnkept(Exception):
    """The collected files cannot be stored (the worker's own disk); the result still can."""


def _without_files(ctx: WorkerContext, claim: Claim, outcome: Outcome, why: str) -> Outcome:
    """The result, saying its files were lost, with no frame of them left to read."""
    log.error("job.files_unkept", job_id=claim.job_id, attempt=claim.attempt, error=why)
    ctx.outputs.drop_files(claim.job_id, claim.attempt)
    return replace(outcome, files={"collected": 0, "bytes": 0, "refused": 0, "stopped": why})


def _finish_patiently(ctx: WorkerContext, claim: Claim, outcome: Outcome,
                      container_removed: bool, spool: Spool | None = None,
                      files: Collection | None = None) -> bool:
    """Write the result, waiting out a database outage for as long as the attempt would keep
    its container from the reaper (``lease_s + lease_grace_s``). A retried write is idempotent
    (a COMMIT whose reply was lost counts as done); past the patience the error propagates and
    the job is run again once its lease and run deadline have passed."""
    s = ctx.settings
    give_up = time.monotonic() + s.timeouts.lease_s + s.timeouts.lease_grace_s
    delay = 0.5
    while True:
        try:
            if spool is not None:
                try:
                    _store_whole(ctx, claim, spool, files)
                except _FilesUnkept as exc:
                    files, outcome = None, _without_files(ctx, claim, outcome, str(exc))
                    continue
            wrote = ctx.store.finish(claim.job_id, claim.attempt, outcome,
                                     s.caps.keep_output_bytes, container_removed=container_removed)
            if wrote and spool is not None and claim.attempt > 1:  # a first has no others:
                # a later one fences this one's write out, and none came before it
                _drop(ctx, claim, ctx.outputs.drop_other_attempts)
            return wrote
        except (DatabaseUnavailable, ObjectStoreUnavailable) as exc:
            if time.monotonic() + delay > give_up:
                raise
            log.warning("job.result_write_retry", job_id=claim.job_id, error=str(exc))
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _drop(ctx: WorkerContext, claim: Claim, drop: Callable[[str, int], None]) -> None:
    """Rows and objects no reader will see (fenced by the attempt): a failure to drop them
    now leaves them to go with the job."""
    try:
        drop(claim.job_id, claim.attempt)
    except AirlockError as exc:
        log.warning("job.drop_outputs_failed", job_id=claim.job_id, error=str(exc))
