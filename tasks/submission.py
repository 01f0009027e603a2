"""A submission, the one path of the direct client and the HTTP API: the tenant's per-limit
maxima, the row (within the tenant's quotas, else nothing is stored), then an admission
(``tasks/admission.py``), which sends the job's message if a slot is free and it is next."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from base.errors import AirlockError
from config.settings import Settings
from tasks import admission, quotas
from tasks.contract import JobSpec, ResolvedJob, resolve
from tasks.queue import JobQueue
from tasks.store import JobRow, JobStore
from tasks.tenancy import Quotas, TenantStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Submitted:
    row: JobRow
    created: bool
    # False: admitted, but Redis did not take its message (the workers' reconciler sends it).
    enqueued: bool


class Submitter:
    def __init__(self, store: JobStore, queue: JobQueue, s: Settings) -> None:
        self.store, self.queue, self.settings = store, queue, s
        self.quotas = Quotas(TenantStore(store.engine), s.tenancy)

    def submit(self, spec: JobSpec, job: ResolvedJob, tenant: str,
               batch_id: str | None = None) -> Submitted:
        """Raises JobSpecError (a limit above the tenant's maximum), QuotaExceeded,
        DatabaseUnavailable; nothing is stored then."""
        quota = self.quotas.of(tenant)
        spec, job = self._within_maxima(spec, job, quota)
        row, created = self.store.create_row(
            spec=spec.model_dump(mode="json", exclude_none=True), profile=job.profile,
            image=job.image, limits=job.limits.as_dict(), idempotency_key=spec.idempotency_key,
            label=spec.label, tenant=tenant, batch_id=batch_id, quota=quota)
        if not created:
            return Submitted(row, False, True)
        unsent = {a.job_id for a in self.admit() if not a.sent}
        return Submitted(row, True, str(row.id) not in unsent)

    def _within_maxima(self, spec: JobSpec, job: ResolvedJob,
                       quota: quotas.Quota) -> tuple[JobSpec, ResolvedJob]:
        """A limit the job asks above its tenant's maximum is refused; one it leaves to the
        fleet's default takes the tenant's maximum when that is lower (written into the spec,
        which the worker resolves again)."""
        over = quotas.limit_refusal(quota, spec.limits.model_dump(exclude_none=True))
        if over is not None:
            raise over
        lowered = quotas.lowered_defaults(quota, job.limits.as_dict())
        if not lowered:
            return spec, job
        raw = spec.model_dump(mode="json", exclude_none=True)
        raw["limits"] = raw.get("limits", {}) | lowered
        return resolve(raw, self.settings)

    def admit(self) -> list[admission.Admitted]:
        """Fill the fleet's free slots. The job is recorded whatever happens here: PostgreSQL
        away now leaves it to the next admission (any submission, any worker)."""
        try:
            return admission.admit(self.store.engine, self.settings, self.queue.enqueue)
        except AirlockError as exc:
            log.warning("admission.deferred", error=str(exc))
            return []
