"""Who may reach what through the egress proxy: each egress job's attempt gets a credential of
its own, and the proxy lets it reach the common allowlist plus its tenant's endpoints
(docs/network.md, "Per-tenant egress"). The I/O between PostgreSQL (the tenants' endpoints,
the jobs that run) and the proxy's registry (workers/proxy_registry.py)."""

from __future__ import annotations

import threading
import time

import docker
import structlog
from sqlalchemy.engine import Engine

from config.settings import Settings
from tasks.contract import ResolvedJob
from tasks.planning import claim_overhead_s
from tasks.store import Claim, JobStore
from tasks.tenancy import TenantStore
from workers.networks import PROXY_NAME
from workers.proxy_registry import Credential, Registry, job_of, new_credential, stale

log = structlog.get_logger(__name__)
# A credential whose job does not run is removed once this old (seconds): the attempt that
# made it has ended (or died), never one whose claim is still being committed.
STALE_GRACE_S = 30.0


def registry(s: Settings) -> Registry:
    return Registry(s.egress.registry_dir)


def tenant_domains(s: Settings, engine: Engine, tenant: str) -> tuple[str, ...]:
    """The tenant's own endpoints as PostgreSQL has them now, written to the registry too, so
    the proxy knows them before the job's first request (the refresh may be seconds away)."""
    found = TenantStore(engine).egress_domains(tenant)
    registry(s).write_tenant(tenant, found)
    return found


def grant(s: Settings, claim: Claim, job: ResolvedJob) -> Credential | None:
    """A fresh credential for this attempt of an egress job (None without egress), registered
    until the attempt's run deadline at the latest."""
    if job.network != "egress":
        return None
    expires = time.time() + claim_overhead_s(s) + job.limits.timeout_s
    cred = new_credential(claim.job_id, claim.attempt, claim.tenant, expires)
    registry(s).register(cred)
    log.info("egress.granted", job_id=claim.job_id, attempt=claim.attempt, user=cred.user)
    return cred


def revoke(s: Settings, cred: Credential | None) -> None:
    if cred is None:
        return
    try:
        registry(s).revoke(cred.user)
    except OSError as exc:  # the housekeeping's sweep removes it; the teardown goes on
        log.warning("egress.revoke_failed", user=cred.user, error=str(exc))


def sweep(s: Settings, store: JobStore, now: float | None = None) -> list[str]:
    """Remove credentials whose attempt no longer runs (a worker that died mid-job) or that
    expired. The names are listed before the jobs are read: a credential registered after
    its claim is never taken for a dead one."""
    reg = registry(s)
    users = reg.users()
    if not users:
        return []
    jobs = [owner[0] for u in users if (owner := job_of(u)) is not None]
    running = {job: attempt for job, (status, attempt, _) in store.states(jobs).items()
               if status == "running"}
    now = time.time() if now is None else now
    settled = [u for u in stale(users, running) if reg.age(u, now) > STALE_GRACE_S]
    gone = sorted(set(settled) | set(reg.expired(now)))
    for user in gone:
        reg.revoke(user)
        log.info("egress.revoked_stale", user=user)
    return gone


def bytes_used(api: docker.APIClient, cred: Credential | None, since: float) -> int | None:
    """What the proxy delivered to this credential since ``since`` (epoch seconds), from its
    access log (Squid's native format: the reply's size, then the method, URL and user). None
    without egress, or when the log cannot be read (never a reason to fail the job)."""
    if cred is None:
        return None
    try:
        text = api.logs(PROXY_NAME, stdout=True, stderr=False, since=int(since) - 1)
    except Exception as exc:
        log.warning("egress.bytes_unread", user=cred.user, error=str(exc))
        return None
    return access_log_bytes(text.decode("utf-8", "replace"), cred.user)


def access_log_bytes(text: str, user: str) -> int:
    """Pure: the reply bytes of the user's requests in Squid's native access log."""
    total = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[7] == user and fields[4].isdigit():
            total += int(fields[4])
    return total


class TenantSync:
    """A thread of the worker's main process: every ``egress_refresh_s``, the tenants'
    endpoints from PostgreSQL into the registry (``airlock tenant set-egress`` reaches the
    proxy within it, and no proxy restart is needed)."""

    def __init__(self, s: Settings, engine: Engine, stop: threading.Event) -> None:
        self.s, self.engine, self.stop = s, engine, stop
        self.thread = threading.Thread(target=self._loop, name="airlock-egress-sync", daemon=True)

    def start(self) -> TenantSync:
        self.thread.start()
        return self

    def once(self) -> None:
        registry(self.s).write_tenants(TenantStore(self.engine).every_egress())

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except Exception as exc:  # PostgreSQL away: the files stay as they were
                log.warning("egress.sync_failed", error=str(exc))
            self.stop.wait(self.s.egress.refresh_s)
