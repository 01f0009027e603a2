"""The reaper: which of Airlock's containers must go (pure), and removing them (thin I/O).

Selection looks only at containers that carry Airlock's managed label *and* this fleet's
label; other programs share the Docker daemon and their containers are never touched.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from workers import labels as L
from workers.holders import ROLE_HOLDER
from workers.slots import Slot

UNKNOWN_JOB_GRACE_S = 120.0  # a container is created only after its claim commits
LEFTOVER_GRACE_S = 120.0  # a container's side resources and its slot come just before it
NAME_PREFIX = "airlock-"  # every container Airlock makes, and its side resources, is so named
START_GRACE_S = 30.0  # a pool container or holder is listed "created" until its start returns


class Reason(enum.StrEnum):
    JOB_FINISHED = "job_finished"
    STALE_ATTEMPT = "stale_attempt"
    LEASE_EXPIRED = "lease_expired"
    DEADLINE_PASSED = "deadline_passed"
    UNKNOWN_JOB = "unknown_job"
    POOL_EXPIRED = "pool_expired"
    HOLDER_EXPIRED = "holder_expired"
    EXITED = "exited"


def _float(labels: Mapping[str, str], key: str) -> float:
    try:
        return float(labels.get(key, "0") or 0)
    except ValueError:
        return 0.0


@dataclass(frozen=True, slots=True)
class ContainerView:
    """What the reaper knows of one container. A pooled container's job is not in its labels
    (labels cannot change after creation): the I/O layer fills it in from the attempts table."""

    id: str
    labels: Mapping[str, str]
    running: bool
    job: str = ""
    attempt: int = 0

    @classmethod
    def from_labels(cls, cid: str, labels: Mapping[str, str], running: bool,
                    job: str = "", attempt: int = 0) -> ContainerView:
        return cls(cid, labels, running, job or labels.get(L.JOB, ""),
                   attempt or int(labels.get(L.ATTEMPT, "0") or 0))

    @property
    def role(self) -> str:
        """What it is doing now: a pooled container handed a job is a job container."""
        return L.ROLE_JOB if self.job else self.labels.get(L.ROLE, "")

    @property
    def created(self) -> float:
        return _float(self.labels, L.CREATED)

    @property
    def deadline(self) -> float:
        return _float(self.labels, L.DEADLINE)


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as PostgreSQL sees it; ``lease_overdue_s`` is measured on the database's clock
    (negative while the lease holds, infinite when there is none)."""

    status: str
    attempt: int
    lease_overdue_s: float

    @property
    def lease_expired(self) -> bool:
        return self.lease_overdue_s > 0


@dataclass(frozen=True, slots=True)
class Removal:
    container: ContainerView
    reason: Reason

    @property
    def releases_job(self) -> bool:
        """After removal the job may be claimed again at once (its attempt is lost)."""
        return self.reason in (Reason.LEASE_EXPIRED, Reason.DEADLINE_PASSED)


def ours(labels: Mapping[str, str], fleet: str) -> bool:
    return labels.get(L.MANAGED) == "true" and labels.get(L.FLEET) == fleet


def select(containers: Iterable[ContainerView], jobs: Mapping[str, JobState], *, fleet: str,
           now: float, pool_max_age_s: float, lease_grace_s: float = 0.0) -> list[Removal]:
    """The containers to remove, each with its reason. ``now`` is the engine host's clock (the
    labels' times); a lease counts as lost once it is more than ``lease_grace_s`` overdue, so a
    database outage shorter than that does not cost a running job its container."""
    out = []
    for c in containers:
        if not ours(c.labels, fleet):
            continue
        reason = _reason(c, jobs.get(c.job), now, pool_max_age_s, lease_grace_s)
        if reason is not None:
            out.append(Removal(c, reason))
    return out


def _reason(c: ContainerView, job: JobState | None, now: float,
            pool_max_age_s: float, lease_grace_s: float) -> Reason | None:
    if c.labels.get(L.ROLE) == ROLE_HOLDER:  # a namespace holder: never a job's, no attempt
        if not c.running:  # exited, or created and not started yet: give it time to start
            return Reason.EXITED if now - c.created > START_GRACE_S else None
        return Reason.HOLDER_EXPIRED if c.deadline and now > c.deadline else None
    if c.labels.get(L.ROLE) == L.ROLE_POOL and not c.job:
        if not c.running:
            return Reason.EXITED if now - c.created > START_GRACE_S else None
        return Reason.POOL_EXPIRED if now - c.created > pool_max_age_s else None
    if job is None:
        return Reason.UNKNOWN_JOB if now - c.created > UNKNOWN_JOB_GRACE_S else None
    if job.status == "finished":
        return Reason.JOB_FINISHED
    if job.attempt > c.attempt or job.status == "queued":
        return Reason.STALE_ATTEMPT
    if job.status == "running" and job.lease_overdue_s > lease_grace_s:
        return Reason.LEASE_EXPIRED
    if c.deadline and now > c.deadline:
        return Reason.DEADLINE_PASSED
    return None


def leftovers(on_disk: Mapping[str, float], slots: Iterable[Slot], *, live: set[str],
              engine: str, now: float, grace_s: float = LEFTOVER_GRACE_S) -> list[str]:
    """The names whose side resources (volume, FIFO and spool folders, cgroup parent) and slot
    must go: no container of that name on this engine (``live``, every container it has,
    whatever its fleet or state), and either a slot of this engine older than ``grace_s``
    (whichever fleet: a fleet that stopped leaves its slots to the next), or (a slot lost, a
    worker from before the slots) Airlock's name, no slot of anyone, and resources left alone
    that long. ``on_disk``: each name's newest modification time. A slot of another engine
    (several may share a host) is never this reaper's."""
    entries = {slot.name: slot for slot in slots}
    gone = []
    for name in set(on_disk) | set(entries):
        if name in live:
            continue
        entry = entries.get(name)
        if entry is not None:
            if entry.engine == engine and now - entry.at > grace_s:
                gone.append(name)
        elif name.startswith(NAME_PREFIX) and now - on_disk[name] > grace_s:
            gone.append(name)
    return sorted(gone)
