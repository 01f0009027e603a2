"""What the API answers, as models its OpenAPI document is generated from. What it takes is
the job contract's own model (``tasks.contract.JobSpec``): no second copy of those fields."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobSummaryOut(Out):
    id: str
    tenant: str
    status: Literal["queued", "running", "finished"]
    verdict: str | None
    exit_code: int | None
    label: str | None
    profile: str
    wall_ms: int | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobOut(JobSummaryOut):
    """A job's record (``airlock.records.JobRecord.to_json``). ``stdout``/``stderr`` are the
    row's head as text (invalid UTF-8 replaced; then ``*_b64`` has the bytes); the whole
    output is at ``/v1/jobs/{id}/stdout`` and ``/stderr``."""

    signal: int | None
    stdout: str
    stderr: str
    stdout_valid_utf8: bool
    stderr_valid_utf8: bool
    stdout_b64: str | None = None
    stderr_b64: str | None = None
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_total_bytes: int | None
    stderr_total_bytes: int | None
    cpu_ms: int | None
    peak_memory_bytes: int | None
    attempt: int
    image: str
    limits: dict[str, Any]
    evidence: dict[str, Any] | None
    phases: dict[str, Any] | None
    provenance: dict[str, Any] | None
    files: dict[str, Any] | None  # what was collected, counted: the files at /v1/jobs/{id}/files
    worker_host: str | None
    container_id: str | None
    error: str | None
    idempotency_key: str | None


class SubmittedOut(JobOut):
    created: bool  # False: the idempotency key named an earlier job, which this is
    enqueued: bool  # False: Redis did not take the message; the reconciler sends it later
    note: str | None = None


class FileOut(Out):
    """One entry of the manifest: a file taken (``size``, ``sha256``, ``mode``) or refused
    (``reason``). ``path`` is relative to /workspace, as printable text: a byte that was not
    UTF-8 or a control character is escaped (``\\x0a``; base/names.py). It is the name to GET."""

    n: int
    path: str
    status: Literal["collected", "refused"]
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None
    mode: int | None = None


class FilesOut(Out):
    """A job's collected files (empty while it runs), and their counts (``summary``: the
    record's ``files``, with refusals past those listed and patterns that matched nothing)."""

    job: str
    status: Literal["queued", "running", "finished"]
    summary: dict[str, Any] | None
    files: list[FileOut]


class JobPageOut(Out):
    jobs: list[JobSummaryOut]
    next_cursor: str | None


class CancelOut(Out):
    id: str
    state: Literal["cancelled", "cancelling", "already_finished"]


class BatchLineOut(Out):
    line: int
    id: str | None = None
    created: bool | None = None
    error: str | None = None


class BatchOut(Out):
    batch: str
    items: int
    submitted: int
    invalid: int
    lines: list[BatchLineOut]


class BatchProgressOut(Out):
    id: str
    tenant: str
    created_at: datetime
    items: int
    invalid: int
    jobs: int
    by_status: dict[str, int]
    by_verdict: dict[str, int]


class UsageDayOut(Out):
    tenant: str
    day: date
    jobs: int
    by_verdict: dict[str, int]
    cpu_s: float
    wall_s: float
    peak_memory_gib_s: float
    egress_bytes: int


class UsageOut(Out):
    usage: list[UsageDayOut]


class HealthOut(Out):
    status: Literal["ok"]
    checks: dict[str, str] = {}
