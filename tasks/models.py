"""The tables: ``jobs`` (the source of truth for a job's state) and ``attempts`` (its history)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """Whose jobs are whose: every job belongs to one tenant (the API's keys, quotas and egress
    are a tenant's). Named by a short slug, never renamed."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Its share of the fleet's slots against other tenants' (fair share, tasks/fairshare.py).
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    # Quotas: NULL takes the fleet's default (settings, the tenants section); tasks/quotas.py.
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    max_queued: Mapped[int | None] = mapped_column(Integer)
    submissions_per_min: Mapped[int | None] = mapped_column(Integer)
    cpu_s_per_day: Mapped[int | None] = mapped_column(Integer)
    # The most each limit may ask for, by limit name, at or below the fleet's maximums.
    max_limits: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict,
                                                       server_default=text("'{}'::jsonb"))
    # Its own egress endpoints (airlock tenant set-egress): its jobs reach these beside the
    # fleet's common allowlist; other tenants' jobs do not. A leading dot: subdomains too.
    egress_domains: Mapped[list[str]] = mapped_column(ARRAY(String(253)), default=list,
                                                      server_default=text("'{}'"))

    __table_args__ = (CheckConstraint("weight > 0", name="ck_tenants_weight"),)


class SubmissionCount(Base):
    """Submissions a tenant made in a minute (its rate quota; old minutes are deleted)."""

    __tablename__ = "submission_counts"

    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


class UsageDay(Base):
    """What a tenant's jobs used on a day (UTC), by verdict. Added to by a trigger as each job
    ends (migration 0008), in the transaction that ends it: counted once, kept after the jobs
    themselves are deleted by retention."""

    __tablename__ = "usage_days"

    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    verdict: Mapped[str] = mapped_column(String(32), primary_key=True)
    jobs: Mapped[int] = mapped_column(Integer)
    cpu_ms: Mapped[int] = mapped_column(BigInteger)
    wall_ms: Mapped[int] = mapped_column(BigInteger)
    peak_memory_byte_s: Mapped[float] = mapped_column(Float)
    egress_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ApiKey(Base):
    """A tenant's key to the HTTP API: only a keyed hash of it (tasks/keys.py)."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"))
    scope: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Batch(Base):
    """Jobs submitted together through the API (``POST /v1/batches``)."""

    __tablename__ = "batches"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    items: Mapped[int] = mapped_column(Integer)  # lines received, valid or not
    invalid: Mapped[int] = mapped_column(Integer)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"), default="default")
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True),
                                                       ForeignKey("batches.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    label: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED)
    verdict: Mapped[str | None] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    profile: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(Text)
    limits: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_host: Mapped[str | None] = mapped_column(Text)
    container_id: Mapped[str | None] = mapped_column(String(80))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    stdout: Mapped[bytes | None] = mapped_column(LargeBinary)
    stderr: Mapped[bytes | None] = mapped_column(LargeBinary)
    stdout_bytes: Mapped[int | None] = mapped_column(BigInteger)
    stderr_bytes: Mapped[int | None] = mapped_column(BigInteger)
    stdout_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    stderr_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    wall_ms: Mapped[int | None] = mapped_column(Integer)
    cpu_ms: Mapped[int | None] = mapped_column(Integer)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Bytes the egress proxy delivered to the job (its access log, by the attempt's credential).
    egress_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Absent is SQL NULL, never JSON null (none_as_null): a row's objects are objects or NULL.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    phases: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # What was collected (counts, bytes, patterns that named nothing); the files: job_files.
    files: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Given a place in the queue (tasks/admission.py): a queued job without it waits its turn.
    admitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_jobs_waiting", "tenant", "queued_at", "id",
              postgresql_where=text("status = 'queued' AND admitted_at IS NULL")),
        Index("ix_jobs_in_flight", "tenant", postgresql_where=text(
            "status = 'running' OR (status = 'queued' AND admitted_at IS NOT NULL)")),
        Index("ix_jobs_status_lease", "status", "lease_until"),
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_tenant_queued_at", "tenant", "queued_at"),
        Index("ix_jobs_batch_id", "batch_id"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )


class Secret(Base):
    """A tenant's job secret, sealed (AES-256-GCM, tasks/secrets.py): its value is never stored
    in the clear, and its ciphertext opens only as this tenant's secret of this name."""

    __tablename__ = "secrets"

    tenant: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.name", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16))  # which key sealed it (not the key)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Attempt(Base):
    __tablename__ = "attempts"

    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_host: Mapped[str] = mapped_column(Text)
    container_id: Mapped[str | None] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    container_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    container_removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(32))


class Blob(Base):
    """A job's output kept whole beyond the row's head (its stdout, its stderr) and its
    collected files (``file:<n>``, n its entry in job_files), in chunks of zstd frames, each
    of ``raw_bytes`` at most 1 MiB before compression. Written by one attempt and read only
    once that attempt's result is the job's (``jobs.attempt``); a set an attempt left
    half-written is never read and goes with the next result or the job. ``data`` is NULL
    where the frame is in the object store (tasks/objects.py) instead."""

    __tablename__ = "job_blobs"

    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob: Mapped[str] = mapped_column(String(300), primary_key=True)  # stdout, stderr
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    raw_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)


class FileEntry(Base):
    """One entry of a job's manifest of collected files: taken (its bytes in job_blobs as
    ``file:<n>``) or refused, with why. ``path`` is relative to /workspace as printable text
    (base/names.py: a newline or a byte that is not UTF-8 escaped, reversibly). Written by
    one attempt after all its frames, and read, as its frames are, only once that attempt's
    result is the job's."""

    __tablename__ = "job_files"

    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[int | None] = mapped_column(Integer)


class Host(Base):
    """One Docker host of the fleet, as its worker last said (``tasks.hosts``): a heartbeat per
    housekeeping pass, and whether an operator drained it (``airlock fleet drain``)."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # the worker's hostname
    fleet: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(255))
    engine_id: Mapped[str | None] = mapped_column(String(128))
    # Where the worker reaches it: engines of one machine may share an ID (one key.json).
    engine_url: Mapped[str | None] = mapped_column(String(255))
    engine_version: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(64))  # Airlock's, the worker's code
    schema_head: Mapped[str | None] = mapped_column(String(64))  # the code's newest migration
    concurrency: Mapped[int] = mapped_column(Integer, default=0)
    pool_size: Mapped[int] = mapped_column(Integer, default=0)  # warm containers configured
    slots_in_use: Mapped[int] = mapped_column(Integer, default=0)  # running job containers
    pool_warm: Mapped[int] = mapped_column(Integer, default=0)  # running warm containers
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    drained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
