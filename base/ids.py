"""A job's id, parsed once at the boundary (client, CLI, HTTP, a broker message) into one
typed value: its canonical UUID text. An id that cannot exist names no job."""

from __future__ import annotations

import uuid
from typing import NewType

from base.errors import JobNotFound

JobId = NewType("JobId", str)


def parse_job_id(text: object) -> JobId:
    """The canonical form of ``text`` as a job id; ``JobNotFound`` when it is not one."""
    if isinstance(text, uuid.UUID):
        return JobId(str(text))
    if not isinstance(text, str) or len(text) > 64:
        raise JobNotFound(f"no job {str(text)[:64]!r}")
    try:
        return JobId(str(uuid.UUID(text)))
    except ValueError:
        raise JobNotFound(f"no job {text!r}") from None


def new_job_id() -> JobId:
    return JobId(str(uuid.uuid4()))
