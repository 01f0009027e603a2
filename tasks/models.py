"""The tables: ``jobs`` (the source of truth for a job's state) and ``attempts`` (its history)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
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


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.name"), default="default")
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
    # Absent is SQL NULL, never JSON null (none_as_null): a row's objects are objects or NULL.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    phases: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # What was collected (counts, bytes, patterns that named nothing); the files: job_files.
    files: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_jobs_status_lease", "status", "lease_until"),
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_tenant_queued_at", "tenant", "queued_at"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )


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
