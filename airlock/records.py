"""Frozen views of job rows, as the client API and the CLI hand them out."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tasks.models import Job, Status

TERMINAL = {Status.FINISHED}


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def _valid_utf8(data: bytes | None) -> bool:
    try:
        (data or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    tenant: str
    status: str
    verdict: str | None
    exit_code: int | None
    signal: int | None
    stdout_bytes: bytes
    stderr_bytes: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_total: int | None
    stderr_total: int | None
    wall_ms: int | None
    cpu_ms: int | None
    peak_memory_bytes: int | None
    attempt: int
    profile: str
    image: str
    limits: dict[str, Any]
    evidence: dict[str, Any] | None
    phases: dict[str, Any] | None
    provenance: dict[str, Any] | None
    files: dict[str, Any] | None  # what was collected: counts (the files: Airlock.files)
    worker_host: str | None
    container_id: str | None
    error: str | None
    idempotency_key: str | None
    label: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Job | sa.Row[Any]) -> JobRecord:
        """From a Job, or a row of the jobs table (the same attributes)."""
        return cls(
            id=str(row.id), tenant=row.tenant, status=row.status, verdict=row.verdict,
            exit_code=row.exit_code,
            signal=row.signal, stdout_bytes=row.stdout or b"", stderr_bytes=row.stderr or b"",
            stdout_truncated=row.stdout_truncated, stderr_truncated=row.stderr_truncated,
            stdout_total=row.stdout_bytes, stderr_total=row.stderr_bytes, wall_ms=row.wall_ms,
            cpu_ms=row.cpu_ms, peak_memory_bytes=row.peak_memory_bytes, attempt=row.attempt,
            profile=row.profile, image=row.image, limits=row.limits, evidence=row.evidence,
            phases=row.phases, provenance=row.provenance, files=row.files,
            worker_host=row.worker_host,
            container_id=row.container_id, error=row.error,
            idempotency_key=row.idempotency_key, label=row.label, queued_at=row.queued_at,
            started_at=row.started_at, finished_at=row.finished_at,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """From ``to_json``'s form (the HTTP API's answer)."""
        def output(name: str) -> bytes:
            raw = data.get(f"{name}_b64")
            return base64.b64decode(raw) if raw else str(data.get(name) or "").encode()

        def when(name: str) -> datetime | None:
            value = data.get(name)
            return datetime.fromisoformat(value) if value else None

        queued = when("queued_at")
        assert queued is not None
        return cls(
            id=data["id"], tenant=data["tenant"], status=data["status"],
            verdict=data.get("verdict"), exit_code=data.get("exit_code"),
            signal=data.get("signal"), stdout_bytes=output("stdout"),
            stderr_bytes=output("stderr"), stdout_truncated=data["stdout_truncated"],
            stderr_truncated=data["stderr_truncated"], stdout_total=data.get("stdout_total_bytes"),
            stderr_total=data.get("stderr_total_bytes"), wall_ms=data.get("wall_ms"),
            cpu_ms=data.get("cpu_ms"), peak_memory_bytes=data.get("peak_memory_bytes"),
            attempt=data["attempt"], profile=data["profile"], image=data["image"],
            limits=data["limits"], evidence=data.get("evidence"), phases=data.get("phases"),
            provenance=data.get("provenance"), files=data.get("files"),
            worker_host=data.get("worker_host"),
            container_id=data.get("container_id"), error=data.get("error"),
            idempotency_key=data.get("idempotency_key"), label=data.get("label"),
            queued_at=queued, started_at=when("started_at"), finished_at=when("finished_at"),
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def stdout(self) -> str:
        return _text(self.stdout_bytes)

    @property
    def stderr(self) -> str:
        return _text(self.stderr_bytes)

    def summary(self) -> str:
        parts = [f"airlock: job {self.id} {self.verdict or self.status}"]
        if self.exit_code is not None:
            parts.append(f"exit={self.exit_code}")
        if self.wall_ms is not None:
            parts.append(f"wall={self.wall_ms}ms")
        if self.cpu_ms is not None:
            parts.append(f"cpu={self.cpu_ms}ms")
        if self.peak_memory_bytes is not None:
            parts.append(f"mem={self.peak_memory_bytes / 2**20:.1f}MiB")
        if self.stdout_truncated or self.stderr_truncated:
            parts.append("output truncated")
        if self.error:
            parts.append(f"error={self.error}")
        return " ".join(parts)

    def files_note(self) -> str | None:
        """One line saying the job kept files (or refused some), and how to get them."""
        files = self.files or {}
        if not files:
            return None
        said = f"{files.get('collected', 0)} files collected ({files.get('bytes', 0)} bytes)"
        if files.get("refused"):
            said += f", {files['refused']} refused"
        if files.get("unmatched"):
            said += f", {len(files['unmatched'])} patterns matched nothing"
        return f"airlock: {said}: airlock files {self.id} [--out DIR]"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "tenant": self.tenant, "status": self.status,
            "verdict": self.verdict,
            "exit_code": self.exit_code, "signal": self.signal,
            "stdout": self.stdout, "stderr": self.stderr,
            "stdout_valid_utf8": _valid_utf8(self.stdout_bytes),
            "stderr_valid_utf8": _valid_utf8(self.stderr_bytes),
            "stdout_truncated": self.stdout_truncated, "stderr_truncated": self.stderr_truncated,
            "stdout_total_bytes": self.stdout_total, "stderr_total_bytes": self.stderr_total,
            "wall_ms": self.wall_ms, "cpu_ms": self.cpu_ms,
            "peak_memory_bytes": self.peak_memory_bytes, "attempt": self.attempt,
            "profile": self.profile, "image": self.image, "limits": self.limits,
            "evidence": self.evidence, "phases": self.phases, "provenance": self.provenance,
            "files": self.files,
            "worker_host": self.worker_host, "container_id": self.container_id,
            "error": self.error, "idempotency_key": self.idempotency_key, "label": self.label,
            "queued_at": self.queued_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }
        for name in ("stdout", "stderr"):
            if not out[f"{name}_valid_utf8"]:
                out[f"{name}_b64"] = base64.b64encode(getattr(self, f"{name}_bytes")).decode()
        return out
