"""Airlock's one error tree.

    AirlockError                 every error Airlock raises on purpose
    ├── JobSpecError             the caller's job is invalid (names the field); nothing was queued
    ├── JobNotFound              no job with that id
    ├── NoSuchFile               the job kept no file of that name
    ├── InfrastructureError      Docker, Redis or PostgreSQL failed; safe to retry
    │   ├── DockerUnavailable
    │   ├── DatabaseUnavailable
    │   ├── BrokerUnavailable
    │   └── ObjectStoreUnavailable
    └── HostNotSafe              the host cannot enforce a configured bound (fail closed)

A job's own failure (timeout, OOM, non-zero exit) is never an exception: it is a verdict.
"""

from __future__ import annotations


class AirlockError(Exception):
    """Airlock failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


def preview(text: str, limit: int = 40) -> str:
    """``text`` fit for one line of a message: at most ``limit`` characters of it, with
    control characters, lone surrogates and other unprintable ones escaped (``\\x00``)."""
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[:limit])
    return shown + ("…" if len(text) > limit else "")


class JobSpecError(AirlockError):
    """The job is invalid."""

    def __init__(self, field: str, message: str) -> None:
        # Both may quote the caller's input: one short line, safe on a terminal.
        self.field = preview(field, 100)
        super().__init__(f"{self.field}: {preview(message, 300)}")


class QuotaExceeded(AirlockError):
    """A tenant's quota refused the job (nothing was stored); ``retry_after_s``: when the
    quota allows it again, if it will by itself (None: only when the tenant's jobs end)."""

    def __init__(self, message: str, retry_after_s: float | None = None,
                 quota: str = "") -> None:
        super().__init__(message)
        self.retry_after_s, self.quota = retry_after_s, quota


class JobNotFound(AirlockError):
    """No such job."""


class NoSuchFile(AirlockError):
    """The job kept no such file."""


class InfrastructureError(AirlockError):
    """A backing service failed; the operation may be retried."""


class DockerUnavailable(InfrastructureError):
    """The Docker engine did not answer."""


class DatabaseUnavailable(InfrastructureError):
    """PostgreSQL did not answer."""


class BrokerUnavailable(InfrastructureError):
    """Redis did not answer."""


class ObjectStoreUnavailable(InfrastructureError):
    """The object store (S3) did not answer, or refused."""


class HostNotSafe(AirlockError):
    """This host cannot enforce Airlock's isolation; refusing to take jobs."""
