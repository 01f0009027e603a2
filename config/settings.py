"""Airlock's settings: the only place that reads the environment (prefix ``AIRLOCK_``).

Build one ``Settings`` at an entry point (the CLI, the worker's start, a test) and pass it on.
Grouped in sections (config/sections.py); every variable kept its name.
"""

from __future__ import annotations

import os
import socket
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from base import limits
from base.limits import Limits
from config.sections import (
    FLAT,
    SECTIONS,
    Api,
    Caps,
    Collect,
    Egress,
    Flower,
    Holders,
    Membership,
    Metrics,
    Objects,
    Pool,
    Sandbox,
    Secrets,
    Streams,
    Tenancy,
    Timeouts,
    Upkeep,
)

GiB = 1024**3
MiB = 1024**2
PREFIX = "AIRLOCK_"


class Profile(BaseModel):
    """An image a job may run in, chosen by name: the allowlist of images."""

    model_config = ConfigDict(frozen=True)

    image: str
    filename: str = "main.py"
    command: tuple[str, ...] = ("python3", "-u", "{file}")
    # The security design's layer 6: the job runs an agent whose tool commands Claude Code (or
    # srt) runs in an inner bubblewrap sandbox. Such a profile gets the agent seccomp profile
    # (config/agent_seccomp.py), an unmasked /proc (a fresh procfs for the inner sandbox), the
    # sandbox settings Airlock writes (workers/inner_sandbox.py) and the preflight's own canary.
    inner_sandbox: bool = False


def _default_profiles() -> dict[str, Profile]:
    sandbox = "airlock/sandbox:latest"
    return {
        "python": Profile(image=sandbox),
        "node": Profile(image=sandbox, filename="main.js", command=("node", "{file}")),
        "shell": Profile(image=sandbox, filename="main.sh", command=("sh", "{file}")),
        "c": Profile(
            image=sandbox,
            filename="main.c",
            command=("sh", "-c", "gcc -O2 -o /workspace/.prog {file} && exec /workspace/.prog"),
        ),
        "agent": Profile(image="airlock/agent:latest", inner_sandbox=True),
    }


COLUMNS: dict[str, Literal["default", "maximum", "minimum"]] = {
    "defaults": "default", "maximums": "maximum", "minimums": "minimum"}


def _column(which: Literal["default", "maximum", "minimum"]) -> Limits:
    return Limits(**limits.column(which))  # type: ignore[arg-type]


def nest_flat(data: dict[str, Any]) -> dict[str, Any]:
    """A section's field given by its flat name (``pool_size=1``) goes into its section."""
    out = {k: v for k, v in data.items() if k not in FLAT}
    for flat in data.keys() & FLAT.keys():
        section, name = FLAT[flat]
        given = out.get(section)
        current = given.model_dump() if isinstance(given, BaseModel) else dict(given or {})
        out[section] = current | {name: data[flat]}
    return out


class FlatEnv(PydanticBaseSettingsSource):
    """Each section field from its own variable, ``AIRLOCK_<alias or name>`` (the names the
    settings had before they were grouped); below keyword arguments, above nested spellings."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every section at once

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(PREFIX)}
        out: dict[str, dict[str, Any]] = {}
        for flat, (section, name) in FLAT.items():
            raw = env.get(PREFIX + flat.upper())
            if raw is None:
                continue
            info = SECTIONS[section].model_fields[name]
            value = self.decode_complex_value(name, info, raw) if self.field_is_complex(info) \
                else raw
            out.setdefault(section, {})[name] = value
        return out


class Settings(BaseSettings):
    """Every setting of Airlock. The scalars that say where things are and who this worker
    is sit at the top; the rest, in sections (config/sections.py)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_nested_delimiter="__", frozen=True, extra="ignore",
        hide_input_in_errors=True,  # an error never quotes a secret (a key, a password)
    )

    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/airlock"
    # A sentinel:// URL (``sentinel://[:PASSWORD@]HOST:PORT[;sentinel://HOST:PORT...][/DB]``,
    # kombu's form) reaches Redis through its Sentinels: the primary named here.
    sentinel_master: str = Field("airlock", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    docker_host: str | None = None
    hostname: str = Field(default_factory=socket.gethostname)
    fleet: str = "default"
    queue: str = "airlock"
    # Whose jobs a client without a key submits (in-fleet code, the CLI in direct mode).
    default_tenant: str = Field("default", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    concurrency: int = Field(default=4, ge=1, le=64)

    profiles: dict[str, Profile] = Field(default_factory=_default_profiles)
    default_profile: str = "python"
    # Per-job limits (base/limits.py names them): what a job gets unless it asks, and the
    # range it may ask for.
    defaults: Limits = Field(default_factory=lambda: _column("default"))
    maximums: Limits = Field(default_factory=lambda: _column("maximum"))
    minimums: Limits = Field(default_factory=lambda: _column("minimum"))
    # Per-job storage of /workspace, /opt/venv and home: "btrfs" (a subvolume with a quota) or
    # "tmpfs" (memory-backed); a host that cannot enforce it is refused.
    storage: Literal["btrfs", "tmpfs"] = "btrfs"
    # The OCI runtime of the job containers and holders (HostConfig.Runtime): empty for the
    # engine's default (runc), or a runtime the engine has registered, else the worker refuses.
    # crun starts a container for about 20 ms less host CPU than runc, with differences from
    # the security design's mounts and errnos (docs/benchmark.md, "The OCI runtime").
    runtime: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$")
    log_format: Literal["json", "console"] = "console"
    # ``airlock doctor``: known CVEs an operator accepted after reading docs/operations.md.
    allow_known_cves: tuple[str, ...] = ()

    caps: Caps = Field(default_factory=Caps.default)
    sandbox: Sandbox = Field(default_factory=Sandbox.default)
    timeouts: Timeouts = Field(default_factory=Timeouts.default)
    streams: Streams = Field(default_factory=Streams.default)
    upkeep: Upkeep = Field(default_factory=Upkeep.default)
    membership: Membership = Field(default_factory=Membership.default)
    pool: Pool = Field(default_factory=Pool.default)
    holders: Holders = Field(default_factory=Holders.default)
    metrics: Metrics = Field(default_factory=Metrics.default)
    flower: Flower = Field(default_factory=Flower.default)
    egress: Egress = Field(default_factory=Egress.default)
    api: Api = Field(default_factory=Api.default)
    tenancy: Tenancy = Field(default_factory=Tenancy.default)
    collect: Collect = Field(default_factory=Collect.default)
    objects: Objects = Field(default_factory=Objects.default)
    secrets: Secrets = Field(default_factory=Secrets.default)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, FlatEnv(settings_cls), env_settings, dotenv_settings,
                file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: object) -> object:
        return nest_flat(data) if isinstance(data, dict) else data

    def but(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` (top-level names, flat section names such as
        ``pool_size``, or whole sections)."""
        base = self.model_dump()
        for key, value in nest_flat(changes).items():
            if isinstance(base.get(key), dict) and isinstance(value, dict):
                base[key] = base[key] | value
            else:
                base[key] = value
        return type(self).model_validate(base)

    @field_validator("defaults", "maximums", "minimums", mode="before")
    @classmethod
    def _limits(cls, value: object, info: ValidationInfo) -> object:
        """What is given (``AIRLOCK_DEFAULTS__TIMEOUT_S``, a keyword), the rest from the
        limits table's column (base/limits.py)."""
        if isinstance(value, dict) and info.field_name is not None:
            return limits.column(COLUMNS[info.field_name]) | value
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_profile not in self.profiles:
            raise ValueError(f"default_profile {self.default_profile!r} is not in profiles")
        unknown = [p for p in self.pool.profiles if p not in self.profiles]
        if unknown:
            raise ValueError(f"pool_profiles {unknown} are not in profiles")
        inner = [p for p in self.pool.profiles if self.profiles[p].inner_sandbox]
        if inner:  # their sandbox settings are written for the job (its allowlist, its secrets)
            raise ValueError(f"pool_profiles {inner} have an inner sandbox: they are not pooled")
        for name in limits.BY_NAME:
            low, default, high = (
                getattr(self.minimums, name), getattr(self.defaults, name),
                getattr(self.maximums, name),
            )
            if not low <= default <= high:
                raise ValueError(f"{name}: need minimum {low} <= default {default} <= maximum {high}")
        nproc = self.sandbox.rlimits.get("nproc")
        if nproc is not None and nproc < self.maximums.pids:
            raise ValueError(f"rlimits nproc {nproc} is below the pids maximum {self.maximums.pids}:"
                             " a fork bomb would meet the rlimit, not the pids cgroup")
        if not (self.container_deadline_s < self.soft_time_limit_s < self.hard_time_limit_s
                < self.timeouts.visibility_timeout_s):
            raise ValueError(
                "timeouts out of order: need container deadline < soft time limit < hard time"
                f" limit < visibility timeout, got {self.container_deadline_s} <"
                f" {self.soft_time_limit_s} < {self.hard_time_limit_s} < {self.timeouts.visibility_timeout_s}"
            )
        return self

    @property
    def container_deadline_s(self) -> float:
        """The longest a job container can live after its claim: the launcher waits at most
        startup_grace_s for its payload, then kills everything backstop_s after the job's
        timeout, even if its worker died."""
        t = self.timeouts
        return t.startup_grace_s + self.maximums.timeout_s + t.backstop_s

    @property
    def soft_time_limit_s(self) -> float:
        """Celery's soft limit: the longest container's deadline plus time to collect and record."""
        return self.container_deadline_s + self.timeouts.soft_margin_s

    @property
    def hard_time_limit_s(self) -> float:
        return self.soft_time_limit_s + self.timeouts.hard_margin_s

    @cached_property
    def seccomp_json(self) -> str:
        """The profile's text as handed to the engine (``config.seccomp.for_engine``)."""
        from config.seccomp import for_engine, load_profile

        return for_engine(load_profile(self.sandbox.seccomp_profile))

    @cached_property
    def agent_seccomp_json(self) -> str:
        """The inner-sandbox profiles' seccomp text as handed to the engine: derived from the
        base profile (``config.agent_seccomp``); ValueError if the base's shape is unknown."""
        from config.agent_seccomp import agent_profile
        from config.seccomp import for_engine, load_profile

        return for_engine(agent_profile(load_profile(self.sandbox.seccomp_profile)))

    @property
    def inner_sandbox_profiles(self) -> tuple[str, ...]:
        return tuple(name for name, p in self.profiles.items() if p.inner_sandbox)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once, at an entry point."""
    return Settings(**overrides)  # type: ignore[arg-type]
