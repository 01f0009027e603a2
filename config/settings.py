"""Airlock's settings: the only place that reads the environment (prefix ``AIRLOCK_``).

Build one ``Settings`` at an entry point (the CLI, the worker's start, a test) and pass it on.
"""

from __future__ import annotations

import re
import socket
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from base import limits
from base.limits import Limits

GiB = 1024**3
MiB = 1024**2
# An egress allowlist entry, as the proxy accepts it: ".example.org" also allows subdomains.
DOMAIN = re.compile(r"^\.?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}$")
Domains = Annotated[tuple[str, ...], NoDecode]  # from the environment: comma-separated


class Profile(BaseModel):
    """An image a job may run in, chosen by name: the allowlist of images."""

    model_config = ConfigDict(frozen=True)

    image: str
    filename: str = "main.py"
    command: tuple[str, ...] = ("python3", "-u", "{file}")


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
    }


COLUMNS: dict[str, Literal["default", "maximum", "minimum"]] = {
    "defaults": "default", "maximums": "maximum", "minimums": "minimum"}


def _column(which: Literal["default", "maximum", "minimum"]) -> Limits:
    return Limits(**limits.column(which))  # type: ignore[arg-type]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIRLOCK_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/airlock"
    docker_host: str | None = None
    hostname: str = Field(default_factory=socket.gethostname)
    fleet: str = "default"
    queue: str = "airlock"
    concurrency: int = Field(default=4, ge=1, le=64)

    profiles: dict[str, Profile] = Field(default_factory=_default_profiles)
    default_profile: str = "python"
    # Per-job limits (base/limits.py names them): what a job gets unless it asks, and the
    # range it may ask for.
    defaults: Limits = Field(default_factory=lambda: _column("default"))
    maximums: Limits = Field(default_factory=lambda: _column("maximum"))
    minimums: Limits = Field(default_factory=lambda: _column("minimum"))
    max_code_bytes: int = 256 * 1024
    keep_output_bytes: int = MiB  # stored in PostgreSQL per stream; the rest is streamed
    max_stdin_bytes: int = 4 * MiB
    max_files_bytes: int = 4 * MiB
    max_env_entries: int = 64

    # Filesystem inside a job.
    tmpfs_tmp: str = "1g"
    tmpfs_var_tmp: str = "512m"
    tmpfs_run: str = "64m"
    shm_bytes: int = 64 * MiB
    storage: Literal["btrfs", "tmpfs"] = "btrfs"
    volumes_root: str = "/var/lib/airlock/volumes"
    job_uid: int = 1000
    job_gid: int = 1000
    seccomp_profile: str | None = None  # a path; None means config/seccomp.json
    # The job containers' PID 1 on the host (scripts/build-launcher.sh builds it from
    # workers/launcher.c), bound read-only into each one; the same path for a worker in a
    # container, which must see it there too (docker-compose.yml).
    launcher_path: str = Field(default="/usr/local/libexec/airlock/airlock-init", pattern=r"^/")
    # Where the worker makes each job container's stdin/stdout/stderr FIFOs (a folder per
    # container, bound into it). The engine resolves the binds: a worker in a container needs
    # this path from the host, at the same path (docker-compose.yml).
    io_dir: str = Field(default="/run/airlock/io", pattern=r"^/")
    # The OCI runtime of the job containers and holders (HostConfig.Runtime): empty for the
    # engine's default (runc), or a runtime the engine has registered, else the worker refuses.
    # crun starts a container for about 20 ms less host CPU than runc, with differences from
    # the security design's mounts and errnos (docs/benchmark.md, "The OCI runtime").
    runtime: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$")
    # A known container escape in the engine's runc that no package patched and no operator
    # accepted (allow_known_cves): ``refuse`` to start the worker, or ``warn`` (docs/attacks.md).
    runtime_cve_policy: Literal["warn", "refuse"] = "warn"

    # Timeouts, in seconds (docs/lifecycle.md). Order, checked below and tested (F0):
    # container deadline < soft time limit < hard time limit < broker visibility timeout.
    startup_grace_s: float = Field(default=60.0, gt=0)  # claim to payload: a launcher's wait
    backstop_s: float = Field(default=5.0, gt=0)  # launcher kills its container this after timeout
    # Container deadline to Celery's soft limit: collect the evidence and record the result,
    # waiting out a database outage of up to lease_s + lease_grace_s (tasks/execute.py).
    soft_margin_s: float = Field(default=75.0, gt=0)
    hard_margin_s: float = Field(default=30.0, gt=0)
    visibility_timeout_s: float = 900.0
    lease_s: float = Field(default=30.0, gt=0)
    lease_grace_s: float = Field(default=30.0, ge=0)  # reaper takes a container this far past lease
    shutdown_grace_s: float = Field(default=30.0, gt=0)  # warm shutdown: then jobs are handed back
    max_attempts: int = Field(default=3, ge=1)
    # Live output (docs/streaming.md). A job's stream holds at most stream_max_bytes of output
    # (also bounded by its own output cap) in at most stream_maxlen entries, from the start:
    # nothing is trimmed, so late joiners see the head; past either bound it says "truncated".
    stream_maxlen: int = 50_000
    stream_max_bytes: int = 64 * MiB
    stream_ttl_s: int = 3600  # kept this long after the job ends; then PostgreSQL answers
    relay_buffer_bytes: int = 16 * MiB  # per worker process; past it chunks are skipped, not waited on
    relay_entry_bytes: int = 256 * 1024  # coalesced chunks per stream entry, at most
    result_retention_days: float = 30.0
    reaper_interval_s: float = 15.0
    reconcile_after_s: float = 30.0
    # Warm pool: started containers each worker process keeps ready per pooled image (0: off),
    # for jobs of pool_profiles' images with the default disk bound (other limits are updated).
    # On by default: a pooled job skips the engine's create and start (docs/benchmark.md).
    pool_size: int = Field(default=1, ge=0, le=64)
    pool_max_age_s: float = Field(default=600.0, ge=1.0)
    pool_profiles: tuple[str, ...] = ("python",)
    # Network-namespace holders (workers/holders.py): "egress" for jobs with a network only
    # (a job without one gets a fresh namespace at no cost), "all", or "off".
    netns_holders: Literal["off", "egress", "all"] = "egress"
    holder_max_jobs: int = Field(default=200, ge=1)
    holder_max_age_s: float = Field(default=900.0, ge=1.0)

    metrics_port: int | None = None  # Prometheus endpoint of each worker; off when unset
    metrics_address: str = "127.0.0.1"
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR; None: a fresh temp dir per worker
    log_format: Literal["json", "console"] = "console"
    health_file: str | None = None  # touched by the worker after each good maintenance pass
    retention_interval_s: float = Field(default=3600.0, gt=0)

    # Flower (``airlock flower``): basic auth is mandatory; loopback unless told otherwise.
    flower_user: str = "admin"
    flower_password: SecretStr | None = None
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555

    # ``airlock doctor``: known CVEs an operator accepted after reading docs/operations.md.
    allow_known_cves: tuple[str, ...] = ()

    # Egress (docs/network.md). Off: a job asking for network "egress" ends with an error
    # verdict, unrun. On: the worker's start creates the networks and the proxy, and its
    # preflight refuses to start unless scripts/firewall/verify.sh passes. The names below
    # are also scripts/firewall/lib.sh's variables (AIRLOCK_WORKSPACE_SUBNET, ...).
    egress_enabled: bool = False
    egress_allowlist: Domains = (
        "pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "api.anthropic.com")
    egress_tenant_endpoints: Domains = ()  # e.g. each tenant's Bedrock endpoint; merged in
    proxy_image: str = "airlock/proxy:latest"
    proxy_ip: str = "172.29.0.2"  # on the workspace network, below its job address range
    proxy_port: int = 3128
    proxy_upstream_ca: str | None = None  # host PEM file; only where the host intercepts TLS
    backend_network: str = "airlock-backend"
    backend_subnet: str = "172.28.0.0/24"
    backend_bridge: str = "airlock-be0"
    workspace_network: str = "airlock-workspace"
    workspace_subnet: str = "172.29.0.0/24"  # jobs get addresses in its upper half
    workspace_bridge: str = "airlock-ws0"
    egress_network: str = "airlock-egress"
    egress_subnet: str = "172.30.0.0/24"
    egress_bridge: str = "airlock-eg0"

    @field_validator("defaults", "maximums", "minimums", mode="before")
    @classmethod
    def _limits(cls, value: object, info: ValidationInfo) -> object:
        """What is given (``AIRLOCK_DEFAULTS__TIMEOUT_S``, a keyword), the rest from the
        limits table's column (base/limits.py)."""
        if isinstance(value, dict) and info.field_name is not None:
            return limits.column(COLUMNS[info.field_name]) | value
        return value

    @field_validator("egress_allowlist", "egress_tenant_endpoints", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (list, tuple)):
            bad = [d for d in value if not isinstance(d, str) or not DOMAIN.match(d)]
            if bad:
                raise ValueError(f"not lower-case domain names: {bad}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_profile not in self.profiles:
            raise ValueError(f"default_profile {self.default_profile!r} is not in profiles")
        unknown = [p for p in self.pool_profiles if p not in self.profiles]
        if unknown:
            raise ValueError(f"pool_profiles {unknown} are not in profiles")
        for name in limits.BY_NAME:
            low, default, high = (
                getattr(self.minimums, name), getattr(self.defaults, name),
                getattr(self.maximums, name),
            )
            if not low <= default <= high:
                raise ValueError(f"{name}: need minimum {low} <= default {default} <= maximum {high}")
        if not (self.container_deadline_s < self.soft_time_limit_s < self.hard_time_limit_s
                < self.visibility_timeout_s):
            raise ValueError(
                "timeouts out of order: need container deadline < soft time limit < hard time"
                f" limit < visibility timeout, got {self.container_deadline_s} <"
                f" {self.soft_time_limit_s} < {self.hard_time_limit_s} < {self.visibility_timeout_s}"
            )
        return self

    @property
    def container_deadline_s(self) -> float:
        """The longest a job container can live after its claim: the launcher waits at most
        startup_grace_s for its payload, then kills everything backstop_s after the job's
        timeout, even if its worker died."""
        return self.startup_grace_s + self.maximums.timeout_s + self.backstop_s

    @property
    def soft_time_limit_s(self) -> float:
        """Celery's soft limit: the longest container's deadline plus time to collect and record."""
        return self.container_deadline_s + self.soft_margin_s

    @property
    def hard_time_limit_s(self) -> float:
        return self.soft_time_limit_s + self.hard_margin_s

    @cached_property
    def seccomp_json(self) -> str:
        """The profile's text as handed to the engine (``config.seccomp.for_engine``)."""
        from config.seccomp import for_engine, load_profile

        return for_engine(load_profile(self.seccomp_profile))


def load_settings(**overrides: object) -> Settings:
    """Read the environment once, at an entry point."""
    return Settings(**overrides)  # type: ignore[arg-type]
