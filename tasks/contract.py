"""The job contract: what a caller may ask for, validated before anything is stored or queued.

Two layers, one error. ``JobSpec`` declares what holds on every fleet (strict types, finite
numbers, no NUL byte, valid Unicode, the shapes of names), so a schema generated from it says
so too. ``resolve`` checks what depends on the fleet's settings (profiles, ranges, caps) or on
several fields at once (code or argv, paths that collide). Either way the caller gets a
``JobSpecError`` naming the field, and nothing reached PostgreSQL or the queue.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    create_model,
)
from pydantic_core import ErrorDetails

from base.errors import JobSpecError, preview
from base.limits import LIMITS, LimitInfo, Limits
from config.settings import Profile, Settings
from tasks import archive
from workers import globs

# PostgreSQL text cannot hold a NUL, and the launcher's strings are C strings.
NO_NUL = r"^[^\x00]*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"
# Set by Airlock (the egress proxy's variables win over a job's own: tasks/egress.py; so does
# the inner sandbox's scrub of secrets from an agent's tool commands: workers/inner_sandbox.py).
RESERVED_ENV = re.compile(r"^(AIRLOCK_|(HTTPS?|ALL|NO)_PROXY$|PIP_PROXY$|NPM_CONFIG_(HTTPS_)?PROXY$"
                          r"|CLAUDE_CODE_SUBPROCESS_ENV_SCRUB$)", re.IGNORECASE)
MAX_FILES = 65535  # in each of files and files_b64 (the launcher's 65536, the code's file aside)
NAME_MAX = 255  # bytes, one part of a path (the launcher refuses a longer one)

# A string as PostgreSQL and the launcher can hold it (a lone surrogate fails as not Unicode).
Text = Annotated[str, StringConstraints(strict=True, pattern=NO_NUL)]
EnvName = Annotated[str, StringConstraints(strict=True, pattern=ENV_NAME)]
FileName = Annotated[str, StringConstraints(strict=True, pattern=NO_NUL, max_length=255)]
Glob = Annotated[str, StringConstraints(strict=True, pattern=NO_NUL, max_length=globs.PATTERN_MAX)]
Base64 = Annotated[str, StringConstraints(strict=True, pattern=BASE64)]
TOO_LARGE = 2**63 - 1  # an int limit's ceiling: a refusal never prints a number's 5,000 digits

# What a refusal says, by pydantic's error type (else pydantic's own message).
MESSAGES = {
    "string_unicode": "is not valid Unicode (a lone surrogate, or bytes that were not UTF-8)",
    "finite_number": "must be a finite number, not NaN or Infinity",
    "extra_forbidden": "is not a field of a job",
}
PATTERNS = {NO_NUL: "contains a NUL byte", ENV_NAME: "is not a variable name (A-Z, a-z, 0-9, _)",
            BASE64: "is not base64"}
BINARY = {"stdin": "stdin_b64", "files": "files_b64"}
KINDS = {bool: "a boolean", str: "a string", int: "an integer", float: "a number",
         list: "a list", dict: "an object", type(None): "null"}


def _limit_type(info: LimitInfo) -> Any:
    """Strict: ``true`` and ``"5"`` are not numbers; an int is fine where a float is meant."""
    if info.kind is int:
        return Annotated[int, Strict(), Field(gt=0, le=TOO_LARGE)]
    return Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]


def _job_limits() -> type[BaseModel]:
    """Per-job limits, each optional (left out: the fleet's default); from base/limits.py."""
    fields: dict[str, Any] = {
        info.name: (_limit_type(info) | None,
                    Field(default=None, description=f"{info.help[:-1]}, in {info.unit}."))
        for info in LIMITS}
    config = ConfigDict(extra="forbid", frozen=True, revalidate_instances="always")
    return create_model("JobLimits", __config__=config, **fields)


if TYPE_CHECKING:
    JobLimits = BaseModel
else:
    JobLimits = _job_limits()


class JobSpec(BaseModel):
    """A job as a caller submits it: ``code`` or ``argv``. ``stdin`` and ``files`` are
    UTF-8 text; bytes that are not go base64-encoded in ``stdin_b64`` and ``files_b64``; a
    tar archive (plain or gzip) goes base64-encoded in ``archive_b64``, unpacked into
    /workspace. ``collect`` names the files to keep once the job has ended: globs under
    /workspace (``out/**``, ``report.pdf``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, revalidate_instances="always")

    code: Text | None = None
    argv: list[Text] | None = None
    profile: Text | None = None
    stdin: Text | None = None
    stdin_b64: Base64 | None = None
    files: dict[FileName, Text] = Field(default_factory=dict, max_length=MAX_FILES)
    files_b64: dict[FileName, Base64] = Field(default_factory=dict, max_length=MAX_FILES)
    archive_b64: Base64 | None = None
    collect: list[Glob] = Field(default_factory=list, max_length=globs.MAX_PATTERNS)
    env: dict[EnvName, Text] = Field(default_factory=dict)
    # The tenant's secrets (``airlock secret set``) the job gets in its environment, by name:
    # their values are never in the spec, the record, the logs or the stream. None, not [],
    # when there are none: a stored spec without secrets is what workers before them read.
    secrets: list[EnvName] | None = Field(
        default=None, description="Names of the tenant's secrets the job gets in its environment.")
    idempotency_key: Text | None = Field(default=None, max_length=200)
    network: Literal["none", "egress"] = "none"
    limits: JobLimits = JobLimits()
    label: Text | None = Field(default=None, max_length=200)


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
    collect: tuple[str, ...] = ()
    executable: frozenset[str] = frozenset()  # files written 0755 (an archive's, by their bits)
    secrets: tuple[str, ...] = ()  # names; the worker fetches the values at the job's start
    inner_sandbox: bool = False  # the profile's (config.settings.Profile.inner_sandbox)
    # Its tenant's own egress endpoints, read by the worker at the job's start (docs/network.md).
    egress_domains: tuple[str, ...] = ()


def parse_spec(raw: object) -> JobSpec:
    """``raw`` (a mapping, or a JobSpec: validated again) as a JobSpec, or the first refusal."""
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise _refusal(exc.errors(include_url=False, include_context=True)[0]) from exc


def _refusal(err: ErrorDetails) -> JobSpecError:
    """Pydantic's error as ours: the field's path (``files.a/b``, ``argv[2]``) and what is wrong,
    never the value itself."""
    loc = list(err["loc"])
    is_key = loc[-1:] == ["[key]"]
    if is_key:  # a dict's key: its own text (the loc has it mangled)
        loc[-2:] = [err["input"] if isinstance(err["input"], str) else loc[-2]]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)[1:]
    pattern = str((err.get("ctx") or {}).get("pattern"))
    message = PATTERNS.get(pattern) or MESSAGES.get(err["type"]) or err["msg"]
    if err["type"].endswith("_type"):
        message += f", not {KINDS.get(type(err['input']), type(err['input']).__name__)}"
    if is_key:
        message = f"the name {message}"
    elif pattern == NO_NUL and loc[0] in BINARY:
        message += f" (bytes go base64-encoded in {BINARY[loc[0]]})"
    return JobSpecError(field or "job", message)


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


def _over(field: str, size: int, cap: int, what: str = "bytes") -> None:
    if size > cap:
        raise JobSpecError(field, f"{size} {what} is over the cap of {cap}")


def _b64(field: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise JobSpecError(field, "is not valid base64") from exc


def _profile(spec: JobSpec, s: Settings) -> tuple[str, Profile]:
    name = spec.profile or s.default_profile
    if name not in s.profiles:
        allowed = ", ".join(sorted(s.profiles))
        raise JobSpecError("profile", f"unknown image profile '{preview(name)}'; allowed: {allowed}")
    return name, s.profiles[name]


def _argv(spec: JobSpec, profile: Profile, s: Settings) -> tuple[str, ...]:
    """The job's own argv, or the profile's command that runs its code."""
    if spec.argv is None:
        if spec.code is None:
            raise JobSpecError("code", "nothing to run: give code or argv")
        return tuple(part.replace("{file}", profile.filename) for part in profile.command)
    if spec.code is not None:
        raise JobSpecError("argv", "give code or argv, not both")
    if not spec.argv:
        raise JobSpecError("argv", "is empty: nothing to run")
    if not spec.argv[0]:
        raise JobSpecError("argv[0]", "is empty: no program to run")
    _over("argv", sum(len(a.encode()) + 1 for a in spec.argv), s.caps.argv_bytes)
    return tuple(spec.argv)


def _check_path(field: str, name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise JobSpecError(field, "must be a relative path without '..' or empty parts")
    if any(len(p.encode()) > NAME_MAX for p in parts):
        raise JobSpecError(field, f"has a part over {NAME_MAX} bytes")


Content = tuple[str, str, bytes]  # (field, path, bytes)


def _contents(spec: JobSpec, profile: Profile, s: Settings) -> tuple[list[Content], set[str]]:
    """Every file the job gets, its code first; and the paths written executable."""
    out = []
    if spec.code is not None:
        code = spec.code.encode()
        _over("code", len(code), s.caps.code_bytes)
        out.append((f"code (the file {profile.filename})", profile.filename, code))
    out += [(f"files.{name}", name, text.encode()) for name, text in spec.files.items()]
    out += [(f"files_b64.{name}", name, _b64(f"files_b64.{name}", text))
            for name, text in spec.files_b64.items()]
    executable: set[str] = set()
    if spec.archive_b64 is not None:
        c = s.caps
        members = archive.read(_b64(archive.FIELD, spec.archive_b64), count=c.files_count,
                               each=c.file_bytes, total=c.files_bytes)
        out += [(f"{archive.FIELD}: member '{preview(m.name, 100)}'", m.name, m.data)
                for m in members]
        executable = {m.name for m in members if m.executable}
    return out, executable


def _within_caps(contents: list[Content], s: Settings, disk_bytes: int) -> None:
    """The caps on the job's own files (its code aside): count, each, total, and the disk."""
    files = [c for c in contents if not c[0].startswith("code")]
    _over("files", len(files), s.caps.files_count, "files")
    for field, _, data in files:
        _over(field, len(data), s.caps.file_bytes)
    total = sum(len(data) for _, _, data in files)
    _over("files", total, s.caps.files_bytes)
    if total > disk_bytes:
        raise JobSpecError("files", f"{total} bytes do not fit the job's disk bound of {disk_bytes}")


def _files(spec: JobSpec, profile: Profile, s: Settings,
           disk_bytes: int) -> tuple[dict[str, bytes], frozenset[str]]:
    """The job's files by path: no path twice, and none both a file and a folder."""
    _over("files", len(spec.files) + len(spec.files_b64), s.caps.files_count, "files")
    contents, executable = _contents(spec, profile, s)
    _within_caps(contents, s, disk_bytes)
    fields: dict[str, str] = {}
    for field, name, _ in contents:
        _check_path(field, name)
        if name in fields:
            raise JobSpecError(field, f"is the same path as {fields[name]}")
        fields[name] = field
    for name, field in fields.items():
        parts = name.split("/")
        clash = next((f for f in ("/".join(parts[:i]) for i in range(1, len(parts))) if f in fields),
                     None)
        if clash is not None:
            raise JobSpecError(field, f"needs a folder where {fields[clash]} is a file")
    return {name: content for _, name, content in contents}, frozenset(executable)


def _collect(spec: JobSpec, s: Settings) -> tuple[str, ...]:
    """The globs to collect, each checked (workers/globs.py); not where the host cannot read
    the job's volume."""
    for i, pattern in enumerate(spec.collect):
        why = globs.problem(pattern)
        if why is not None:
            raise JobSpecError(f"collect[{i}]", f"'{preview(pattern, 100)}' {why}")
    if spec.collect and s.storage != "btrfs":
        raise JobSpecError("collect", f"this fleet keeps job volumes in memory (AIRLOCK_STORAGE="
                                      f"{s.storage}), which its workers cannot read once the job"
                                      " has ended: collecting files needs btrfs storage")
    return tuple(dict.fromkeys(spec.collect))


def _stdin(spec: JobSpec, s: Settings) -> bytes:
    if spec.stdin is not None and spec.stdin_b64 is not None:
        raise JobSpecError("stdin", "give stdin or stdin_b64, not both")
    stdin = _b64("stdin_b64", spec.stdin_b64) if spec.stdin_b64 else (spec.stdin or "").encode()
    _over("stdin", len(stdin), s.caps.stdin_bytes)
    return stdin


def _env(spec: JobSpec, s: Settings) -> dict[str, str]:
    _over("env", len(spec.env), s.caps.env_entries, "variables")
    for name, value in spec.env.items():
        if RESERVED_ENV.match(name):
            raise JobSpecError(f"env.{name}", "is reserved: Airlock sets it")
        _over(f"env.{name}", len(value.encode()), s.caps.env_value_bytes)
    return dict(spec.env)


def check_secret_name(field: str, name: str) -> None:
    """A secret's name as a job's environment can take it (also ``airlock secret set``'s)."""
    if not re.match(ENV_NAME, name):
        raise JobSpecError(field, PATTERNS[ENV_NAME])
    if RESERVED_ENV.match(name):
        raise JobSpecError(field, "is reserved: Airlock sets it")


def _secrets(spec: JobSpec, s: Settings) -> tuple[str, ...]:
    names = spec.secrets or []
    _over("secrets", len(names), s.caps.secret_entries, "secrets")
    seen: set[str] = set()
    for i, name in enumerate(names):
        check_secret_name(f"secrets[{i}]", name)
        if name in spec.env:
            raise JobSpecError(f"secrets[{i}]", f"{name} is also in env: name it once")
        if name in seen:
            raise JobSpecError(f"secrets[{i}]", f"names {name} twice")
        seen.add(name)
    return tuple(names)


def resolve(raw: object, s: Settings) -> tuple[JobSpec, ResolvedJob]:
    """Validate a job against the fleet's settings; raise ``JobSpecError`` naming the field."""
    spec = parse_spec(raw)
    name, profile = _profile(spec, s)
    argv = _argv(spec, profile, s)
    limits = resolve_limits(spec.limits, s)
    files, executable = _files(spec, profile, s, limits.disk_bytes)
    stdin = _stdin(spec, s)
    env = _env(spec, s)
    collect = _collect(spec, s)
    secrets = _secrets(spec, s)
    _over("job", len(spec.model_dump_json(exclude_none=True).encode()), s.caps.spec_bytes)
    return spec, ResolvedJob(name, profile.image, argv, files, env, stdin, limits, spec.network,
                             collect, executable, secrets, profile.inner_sandbox)
