"""The job contract: what a caller may ask for, validated before anything is queued."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from base.errors import JobSpecError
from base.limits import LIMITS, Limits
from config.settings import Settings

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Set by Airlock (the egress proxy's variables win over a job's own: tasks/egress.py).
RESERVED_ENV = re.compile(r"^(AIRLOCK_|(HTTPS?|ALL|NO)_PROXY$|PIP_PROXY$|NPM_CONFIG_(HTTPS_)?PROXY$)",
                          re.IGNORECASE)
MAX_FILES = 100


def _job_limits() -> type[BaseModel]:
    """Per-job limits, each optional (left out: the fleet's default); from base/limits.py."""
    fields: dict[str, Any] = {
        info.name: (info.kind | None, Field(default=None, description=f"{info.help[:-1]}, in {info.unit}."))
        for info in LIMITS}
    return create_model("JobLimits", __config__=ConfigDict(extra="forbid", frozen=True), **fields)


if TYPE_CHECKING:
    JobLimits = BaseModel
else:
    JobLimits = _job_limits()


class JobSpec(BaseModel):
    """A job as a caller submits it. ``stdin`` and file contents are text unless ``*_b64``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str | None = None
    argv: list[str] | None = None
    profile: str | None = None
    stdin: str | None = None
    stdin_b64: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, max_length=200)
    network: Literal["none", "egress"] = "none"
    limits: JobLimits = JobLimits()
    label: str | None = Field(default=None, max_length=200)


@dataclass(frozen=True, slots=True)
class ResolvedJob:
    """A job ready for a worker: defaults applied, bounds checked, bytes decoded."""

    profile: str
    image: str
    argv: tuple[str, ...]
    files: dict[str, bytes]
    env: dict[str, str]
    stdin: bytes
    limits: Limits
    network: str


def parse_spec(raw: dict[str, Any] | JobSpec) -> JobSpec:
    if isinstance(raw, JobSpec):
        return raw
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "job"
        raise JobSpecError(field, err["msg"]) from exc


def _bounded(name: str, value: float | int | None, s: Settings) -> float | int:
    low, default, high = (getattr(b, name) for b in (s.minimums, s.defaults, s.maximums))
    if value is None:
        return default  # type: ignore[no-any-return]
    if value < low or value > high:
        raise JobSpecError(f"limits.{name}", f"{value} is outside the allowed range {low}..{high}")
    return value


def resolve_limits(limits: BaseModel, s: Settings) -> Limits:
    values = {info.name: _bounded(info.name, getattr(limits, info.name), s) for info in LIMITS}
    return Limits(**{info.name: info.kind(values[info.name]) for info in LIMITS})  # type: ignore[arg-type]


def _file_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or len(name) > 255:
        raise JobSpecError(f"files.{name}", "must be a relative path without '..' or empty parts")
    if "\x00" in name:
        raise JobSpecError(f"files.{name!r}", "contains a NUL byte")
    return name


def _b64(field: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise JobSpecError(field, "is not valid base64") from exc


def resolve(raw: dict[str, Any] | JobSpec, s: Settings) -> tuple[JobSpec, ResolvedJob]:
    """Validate a job against the fleet's settings; raise ``JobSpecError`` naming the field."""
    spec = parse_spec(raw)
    profile_name = spec.profile or s.default_profile
    if profile_name not in s.profiles:
        allowed = ", ".join(sorted(s.profiles))
        raise JobSpecError("profile", f"unknown image profile {profile_name!r}; allowed: {allowed}")
    profile = s.profiles[profile_name]
    if spec.code is None and not spec.argv:
        raise JobSpecError("code", "give code or argv")
    files: dict[str, bytes] = {}
    if len(spec.files) > MAX_FILES:
        raise JobSpecError("files", f"at most {MAX_FILES} files")
    for name, text in spec.files.items():
        files[_file_name(name)] = text.encode()
    if spec.code is not None:
        code = spec.code.encode("utf-8", "strict")
        if len(code) > s.caps.code_bytes:
            raise JobSpecError("code", f"{len(code)} bytes is over the cap of {s.caps.code_bytes}")
        files[profile.filename] = code
    if sum(len(v) for v in files.values()) > s.caps.files_bytes + s.caps.code_bytes:
        raise JobSpecError("files", f"over the cap of {s.caps.files_bytes} bytes")
    if spec.stdin is not None and spec.stdin_b64 is not None:
        raise JobSpecError("stdin", "give stdin or stdin_b64, not both")
    stdin = _b64("stdin_b64", spec.stdin_b64) if spec.stdin_b64 else (spec.stdin or "").encode()
    if len(stdin) > s.caps.stdin_bytes:
        raise JobSpecError("stdin", f"{len(stdin)} bytes is over the cap of {s.caps.stdin_bytes}")
    if len(spec.env) > s.caps.env_entries:
        raise JobSpecError("env", f"at most {s.caps.env_entries} variables")
    for key in spec.env:
        if not ENV_NAME.match(key) or RESERVED_ENV.match(key):
            raise JobSpecError(f"env.{key}", "is not an allowed variable name")
        if "\x00" in spec.env[key]:
            raise JobSpecError(f"env.{key}", "contains a NUL byte")
    argv = tuple(spec.argv) if spec.argv else tuple(
        part.replace("{file}", profile.filename) for part in profile.command
    )
    if any("\x00" in a for a in argv):
        raise JobSpecError("argv", "contains a NUL byte")
    limits = resolve_limits(spec.limits, s)
    return spec, ResolvedJob(profile_name, profile.image, argv, files, dict(spec.env), stdin,
                             limits, spec.network)
