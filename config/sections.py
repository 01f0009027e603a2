"""The sections of Airlock's settings, one model per concern (``config.settings`` holds them).

Every field keeps the environment variable it had before the settings were grouped: its
alias is that name (``AIRLOCK_POOL_SIZE`` is ``pool.size``); a field without an alias is read
from ``AIRLOCK_<FIELD>``. Nested spellings (``AIRLOCK_POOL__SIZE``) work too.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

MiB = 1024**2
# An egress allowlist entry, as the proxy accepts it: ".example.org" also allows subdomains.
DOMAIN = re.compile(r"^\.?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}$")
Domains = Annotated[tuple[str, ...], NoDecode]  # from the environment: comma-separated


Rlimit = Literal["nofile", "nproc", "msgqueue", "sigpending", "memlock"]
RLIMITS: dict[Rlimit, int] = {"nofile": 8192, "nproc": 1024, "msgqueue": 819200,
                              "sigpending": 4096, "memlock": 8 * MiB}


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True,
                              extra="forbid", hide_input_in_errors=True)

    @classmethod
    def default(cls) -> Self:
        return cls.model_validate({})


class Caps(Section):
    """What a job's spec may carry, before anything is stored."""

    code_bytes: int = Field(256 * 1024, alias="max_code_bytes")
    stdin_bytes: int = Field(4 * MiB, alias="max_stdin_bytes")
    # The job's files in all (files, files_b64 and an archive's members, the code's file
    # aside): how many, the bytes of one, the bytes of all. Every file travels in the
    # launcher's frame (64 MiB at most, workers/launcher.py), and must fit the job's disk bound.
    files_count: int = Field(1000, ge=1, le=65535, alias="max_files")
    file_bytes: int = Field(4 * MiB, gt=0, le=48 * MiB, alias="max_file_bytes")
    files_bytes: int = Field(4 * MiB, gt=0, le=48 * MiB, alias="max_files_bytes")
    env_entries: int = Field(64, alias="max_env_entries")
    # One value; 64 of them and the argv stay under the kernel's 2 MiB for execve's strings.
    env_value_bytes: int = Field(16 * 1024, gt=0, alias="max_env_value_bytes")
    # The whole argv, each entry with its NUL (one entry: at most 128 KiB for the kernel).
    argv_bytes: int = Field(128 * 1024, gt=0, alias="max_argv_bytes")
    # The spec as stored (its JSON), everything above included: base64 makes stdin and
    # files a third larger.
    spec_bytes: int = Field(16 * MiB, gt=0, alias="max_spec_bytes")
    keep_output_bytes: int = MiB  # stored in PostgreSQL per stream; the rest is streamed
    # The tenant's secrets a job may name (``secrets``), and one secret's value at most.
    secret_entries: int = Field(16, ge=0, alias="max_secrets")
    secret_value_bytes: int = Field(16 * 1024, gt=0, alias="max_secret_value_bytes")


class Collect(Section):
    """Files a job names to collect (``collect``: globs under /workspace), read from its volume
    once it has ended (workers/collect.py) and kept with its result. Past a cap a file is
    refused, with its reason; the job's verdict never depends on it."""

    files: int = Field(1000, ge=1, le=100_000, alias="collect_max_files")
    file_bytes: int = Field(256 * MiB, gt=0, alias="collect_max_file_bytes")
    total_bytes: int = Field(512 * MiB, gt=0, alias="collect_max_bytes")
    # Refusals kept one by one in the manifest; past this, only counted (100,000 tiny files
    # over the count cap make 100 rows and a number, not 99,000 rows).
    refusals_listed: int = Field(100, ge=0, le=100_000, alias="collect_refusals_listed")
    # The walk of /workspace stops after this many entries or seconds (inode floods): the
    # rest is said to be not looked at. Within Celery's soft margin (Timeouts.soft_margin_s).
    # A folder's names are held (sorted) while it is walked: about 100 bytes each at most.
    walk_entries: int = Field(200_000, ge=1, le=2_000_000, alias="collect_walk_entries")
    time_s: float = Field(10.0, gt=0, le=60.0, alias="collect_time_s")


class Objects(Section):
    """An S3-compatible bucket for the outputs kept whole (stdout, stderr and collected files,
    as zstd frames), for fleets that outgrow PostgreSQL; off (PostgreSQL keeps them) while
    ``url`` is unset. PostgreSQL keeps the index either way (job_blobs, job_files), so what
    is visible, and when, does not change. The keys are never logged nor stored in a record."""

    url: str | None = Field(None, pattern=r"^https?://", alias="s3_url")
    bucket: str = Field("airlock", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", alias="s3_bucket")
    prefix: str = Field("outputs/", pattern=r"^([A-Za-z0-9._-]+/)*$", alias="s3_prefix")
    region: str = Field("us-east-1", alias="s3_region")
    access_key: SecretStr | None = Field(None, alias="s3_access_key")
    secret_key: SecretStr | None = Field(None, alias="s3_secret_key")

    @property
    def enabled(self) -> bool:
        return self.url is not None


class Sandbox(Section):
    """The filesystem and identity inside a job container, and the host paths it is made of."""

    tmpfs_tmp: str = "1g"
    tmpfs_var_tmp: str = "512m"
    tmpfs_run: str = "64m"
    shm_bytes: int = 64 * MiB
    volumes_root: str = "/var/lib/airlock/volumes"
    # Each job container's uid (its gid the same), from this range, which no account on the
    # host may use (the worker refuses to start otherwise): per-user kernel counters are then
    # the job's alone. The first uid is the namespace holders' (they run only ``sleep``).
    uid_first: int = Field(2_000_000_000, ge=65536, le=2**31 - 2**20, alias="job_uid_first")
    uid_count: int = Field(1024, ge=16, le=2**20, alias="job_uid_count")
    # The host's table of uids and side resources, shared by every worker on the host (a
    # worker in a container needs this path from the host, at the same path).
    slots_path: str = Field("/run/airlock/slots/table.json", pattern=r"^/")
    # Each job container's cores (HostConfig.CpusetCpus): ceil(cpus) of the host's least-loaded,
    # held in one table per host beside the slots (workers/cpusets.py); "off": any core.
    cpuset: Literal["on", "off"] = "on"
    cpusets_path: str = Field("/run/airlock/cpusets/table.json", pattern=r"^/")
    # True (the default): a job that exited 0 by itself (no OOM kill, nothing to collect) is
    # not waited for through the engine, and its container is removed just after its result is
    # written (tasks/attempt.teardown): the container outlives the result its client sees by
    # tens of milliseconds. False: the removal comes before the result, as for every other job.
    remove_after_result: bool = True
    # Where each job's output waits, whole, until its result is written (workers/spool.py).
    spool_dir: str = Field("/var/lib/airlock/spool", pattern=r"^/")
    # RLIMIT_* of every job process, soft = hard (reported in each result's provenance): a
    # job's share of what the kernel counts per process or per user. nproc stays above the
    # largest pids limit, so that the pids cgroup (and its verdict) is what a fork bomb meets.
    rlimits: dict[Rlimit, int] = Field(default_factory=lambda: dict(RLIMITS))
    seccomp_profile: str | None = None  # a path; None means config/seccomp.json
    # The job containers' PID 1 on the host (scripts/build-launcher.sh builds it from
    # workers/launcher.c), bound read-only into each one; the same path for a worker in a
    # container, which must see it there too (docker-compose.yml).
    launcher_path: str = Field(default="/usr/local/libexec/airlock/airlock-init", pattern=r"^/")
    # Where the worker makes each job container's stdin/stdout/stderr FIFOs (a folder per
    # container, bound into it). The engine resolves the binds: a worker in a container needs
    # this path from the host, at the same path (docker-compose.yml).
    io_dir: str = Field(default="/run/airlock/io", pattern=r"^/")
    # A known container escape in the engine's runc that no package patched and no operator
    # accepted (allow_known_cves): ``refuse`` to start the worker, or ``warn`` (docs/attacks.md).
    runtime_cve_policy: Literal["warn", "refuse"] = "warn"
    # The AppArmor profile of every job container (config/apparmor/airlock-job, loaded by
    # scripts/setup-host.sh): "auto" applies it where the kernel has AppArmor and the profile
    # is loaded; "require" refuses to start the worker otherwise; "off" never names one.
    apparmor: Literal["off", "auto", "require"] = "auto"
    apparmor_profile: str = Field("airlock-job", pattern=r"^[a-z][a-z0-9_-]{0,63}$")

    @property
    def holder_uid(self) -> int:
        return self.uid_first

    @property
    def job_uids(self) -> tuple[int, int]:
        """(first, count) of the jobs' own uids: the range but its first."""
        return self.uid_first + 1, self.uid_count - 1


class Timeouts(Section):
    """In seconds (docs/lifecycle.md). Order, checked by Settings and tested (F0): container
    deadline < soft time limit < hard time limit < broker visibility timeout."""

    startup_grace_s: float = Field(default=60.0, gt=0)  # claim to payload: a launcher's wait
    backstop_s: float = Field(default=5.0, gt=0)  # launcher kills its container this after timeout
    # Container deadline to Celery's soft limit: collect the evidence and record the result,
    # waiting out a database outage of up to lease_s + lease_grace_s (tasks/results.py).
    soft_margin_s: float = Field(default=75.0, gt=0)
    hard_margin_s: float = Field(default=30.0, gt=0)
    visibility_timeout_s: float = 900.0
    lease_s: float = Field(default=30.0, gt=0)
    lease_grace_s: float = Field(default=30.0, ge=0)  # reaper takes a container this far past lease
    shutdown_grace_s: float = Field(default=30.0, gt=0)  # warm shutdown: then jobs are handed back
    max_attempts: int = Field(default=3, ge=1)


class Streams(Section):
    """Live output (docs/streaming.md). A job's live stream is a window of its newest
    ``max_bytes`` of output in at most ``maxlen`` entries, trimmed as it grows, and down to its
    end entry once the job has ended: PostgreSQL keeps the output whole (tasks/blobs.py), and
    a reader the window left behind continues from there. Redis holds at most about
    ``max_bytes`` per running job, whatever the jobs print."""

    maxlen: int = Field(10_000, ge=2, alias="stream_maxlen")
    # 16 MiB: a reader the job outpaces by a scheduling pause of about 25 ms keeps up (8 MiB:
    # the benchmark's 64 MiB stream skipped up to 29 MiB on this 2-core host, with 8 workers)
    max_bytes: int = Field(16 * MiB, ge=64 * 1024, alias="stream_max_bytes")
    ttl_s: int = Field(3600, alias="stream_ttl_s")  # the end entry and the done announcement
    relay_buffer_bytes: int = 16 * MiB  # per worker process; past it chunks are skipped
    # Coalesced chunks per stream entry, at most: just under 256 KiB, so that an entry with
    # its fields fits the allocator's 256 KiB class (at 256 KiB it took the next, 320 KiB).
    relay_entry_bytes: int = 255 * 1024


class Upkeep(Section):
    """The housekeeping thread of each worker (tasks/housekeeping.py)."""

    reaper_interval_s: float = 15.0
    # A slot or side resource with no container is swept once this old: the slot is taken,
    # and the resources made, just before the container is created.
    leftover_grace_s: float = Field(120.0, gt=0)
    reconcile_after_s: float = 30.0
    result_retention_days: float = 30.0
    retention_interval_s: float = Field(default=3600.0, gt=0)
    health_file: str | None = None  # touched by the worker after each good maintenance pass


class Membership(Section):
    """This worker as one host of a fleet (docs/operations.md, "A fleet of Docker hosts")."""

    # How long a starting worker waits for a control plane (PostgreSQL, Redis) that does not
    # answer before it refuses to start, in one line (a refusal, such as wrong credentials,
    # is said at once).
    control_plane_wait_s: float = Field(120.0, ge=0)
    # "setting": the worker is named AIRLOCK_HOSTNAME (this machine's name by default);
    # "engine": the Docker host's own name, as its engine says it (compose/host.yml, where
    # the worker runs in a container with a name of its own).
    name_from: Literal["setting", "engine"] = Field("setting", alias="worker_name_from")
    # ``airlock fleet status`` calls a host silent when its last heartbeat (one per
    # housekeeping pass, every AIRLOCK_REAPER_INTERVAL_S) is older than this.
    silent_after_s: float = Field(60.0, gt=0)


class Pool(Section):
    """Warm pool: started containers each worker process keeps ready per pooled image (0: off),
    for jobs of ``profiles``' images with the default disk bound (other limits are updated).
    On by default: a pooled job skips the engine's create and start (docs/benchmark.md)."""

    size: int = Field(default=1, ge=0, le=64, alias="pool_size")
    max_age_s: float = Field(default=600.0, ge=1.0, alias="pool_max_age_s")
    profiles: tuple[str, ...] = Field(("python",), alias="pool_profiles")


class Holders(Section):
    """Network-namespace holders (workers/holders.py): "egress" for jobs with a network only
    (a job without one gets a fresh namespace at no cost), "all", or "off"."""

    mode: Literal["off", "egress", "all"] = Field("egress", alias="netns_holders")
    max_jobs: int = Field(default=200, ge=1, alias="holder_max_jobs")
    max_age_s: float = Field(default=900.0, ge=1.0, alias="holder_max_age_s")


class Metrics(Section):
    port: int | None = Field(None, alias="metrics_port")  # each worker's endpoint; off when unset
    address: str = Field("127.0.0.1", alias="metrics_address")
    # PROMETHEUS_MULTIPROC_DIR; None: a fresh temp dir per worker
    dir: str | None = Field(None, alias="metrics_dir")


class Flower(Section):
    """``airlock flower``: basic auth is mandatory; loopback unless told otherwise."""

    user: str = Field("admin", alias="flower_user")
    password: SecretStr | None = Field(None, alias="flower_password")
    address: str = Field("127.0.0.1", alias="flower_address")
    port: int = Field(5555, alias="flower_port")


class Api(Section):
    """The HTTP API (``airlock api``; airlock/api/) and the clients that use it."""

    # A client's: set both and the CLI and Airlock() speak HTTP to this API instead of
    # PostgreSQL and Redis.
    url: str | None = Field(None, alias="api_url")
    key: SecretStr | None = Field(None, alias="api_key")
    # The server's.
    host: str = Field("127.0.0.1", alias="api_host")
    port: int = Field(8080, ge=1, le=65535, alias="api_port")
    # The keyed hash's secret (tasks/keys.py): keys are stored only as HMAC-SHA-256 with it.
    # Needed by the server and by ``airlock key create``; losing it voids every key.
    key_secret: SecretStr | None = Field(None, alias="api_key_secret")
    max_body_bytes: int = Field(32 * MiB, ge=1024, alias="api_max_body_bytes")
    max_wait_s: float = Field(60.0, gt=0, alias="api_max_wait_s")  # POST /v1/jobs?wait=
    # An SSE reader that does not take an event for this long is dropped (its memory with it).
    send_timeout_s: float = Field(30.0, gt=0, alias="api_send_timeout_s")
    keepalive_s: float = Field(15.0, gt=0, alias="api_keepalive_s")
    # Requests a process serves at once (each holds a thread while PostgreSQL answers).
    threads: int = Field(64, ge=4, le=1024, alias="api_threads")
    # PostgreSQL connections the process keeps (and as many more under load).
    db_pool: int = Field(8, ge=1, le=256, alias="api_db_pool")
    # A proved key is trusted this long without asking PostgreSQL again: a revocation or an
    # expiry takes effect within it. 0: every request asks.
    key_cache_s: float = Field(5.0, ge=0, le=300, alias="api_key_cache_s")


class Tenancy(Section):
    """Tenants kept apart (docs/tenants.md): fair share of the fleet's slots, and the default
    quotas (a tenant's own, set with ``airlock tenant set-quota``, override them; None: none)."""

    # On: each slot that frees goes to the tenant with the fewest jobs in flight for its
    # weight. Off: to the oldest waiting job, whoever's (first come, first served). Jobs are
    # admitted to the queue as slots free either way (tasks/admission.py).
    fair_share: bool = True
    # Jobs admitted beyond the fleet's free slots (a message waiting for each worker process
    # as it frees up; more is less fair).
    admission_headroom: int = Field(0, ge=0, le=1000)
    # A host whose heartbeat is older is not counted in the fleet's slots.
    host_stale_s: float = Field(60.0, gt=0)
    max_in_flight: int | None = Field(None, alias="tenant_max_in_flight", ge=1)
    max_queued: int | None = Field(None, alias="tenant_max_queued", ge=0)
    submissions_per_min: int | None = Field(None, alias="tenant_submissions_per_min", ge=0)
    cpu_s_per_day: int | None = Field(None, alias="tenant_cpu_s_per_day", ge=0)
    # Tenants named in Prometheus labels, at most (by most jobs); the rest count as "other".
    metrics_tenants: int = Field(20, ge=0, le=1000)


class Egress(Section):
    """Egress (docs/network.md). Off: a job asking for network "egress" ends with an error
    verdict, unrun. On: the worker's start creates the networks and the proxy, and its
    preflight refuses to start unless scripts/firewall/verify.sh passes. The names below are
    also scripts/firewall/lib.sh's variables (AIRLOCK_WORKSPACE_SUBNET, ...)."""

    enabled: bool = Field(False, alias="egress_enabled")
    allowlist: Domains = Field(
        ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "api.anthropic.com"),
        alias="egress_allowlist")
    # Deprecated: endpoints every tenant may reach, merged into the common allowlist. A
    # tenant's own endpoints are its (``airlock tenant set-egress``), reachable by its jobs only.
    tenant_endpoints: Domains = Field((), alias="egress_tenant_endpoints")
    # "worker": each worker starts the proxy (and the networks) itself; "external": they are
    # run by someone else (docker-compose.yml's proxy service), which the worker only checks.
    proxy_managed: Literal["worker", "external"] = "worker"
    # The registry of live jobs' proxy credentials and tenants' endpoints (workers/
    # proxy_registry.py): written by the workers, read-only in the proxy. A host path; a
    # worker in a container needs it at the same path (docker-compose.yml).
    registry_dir: str = Field("/run/airlock/egress", pattern=r"^/", alias="egress_registry_dir")
    # How often a worker rewrites its tenants' endpoints from PostgreSQL (a set-egress change
    # reaches the proxy within it).
    refresh_s: float = Field(3.0, gt=0, le=300, alias="egress_refresh_s")
    # Names the proxy resolves itself (its /etc/hosts), name -> IPv4 address, e.g. an endpoint
    # the host's resolver does not know (the test suite's stand-in of the Messages API).
    # Squid still refuses private, link-local and metadata addresses, whatever the name.
    proxy_hosts: dict[str, str] = Field(default_factory=dict)
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

    @field_validator("allowlist", "tenant_endpoints", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("["):
            value = json.loads(value)  # a JSON array, as a nested setting would be written
        elif isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (list, tuple)):
            bad = [d for d in value if not isinstance(d, str) or not DOMAIN.match(d)]
            if bad:
                raise ValueError(f"not lower-case domain names: {bad}")
        return value

    @field_validator("proxy_hosts")
    @classmethod
    def _hosts(cls, value: dict[str, str]) -> dict[str, str]:
        for name, address in value.items():
            if not DOMAIN.match(name) or name.startswith("."):
                raise ValueError(f"proxy_hosts: {name!r} is not a lower-case domain name")
            if not isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address):
                raise ValueError(f"proxy_hosts: {address!r} is not an IPv4 address")
        return value


SECRET_KEY_BYTES = 32  # AES-256-GCM


class Secrets(Section):
    """Tenants' job secrets (tasks/secrets.py): encrypted at rest with ``key``, 32 random
    bytes, base64-encoded (``python3 -c 'import os,base64; print(base64.b64encode(
    os.urandom(32)).decode())'``). Without a key, ``airlock secret`` refuses and a job that
    names a secret ends with an error, unrun. Clients and workers need the same key."""

    key: SecretStr | None = Field(None, alias="secrets_key")

    @field_validator("key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("secrets_key is not base64") from exc
        if len(raw) != SECRET_KEY_BYTES:
            raise ValueError(f"secrets_key must be {SECRET_KEY_BYTES} bytes, base64-encoded"
                             f" (got {len(raw)})")
        return value


SECTIONS: dict[str, type[Section]] = {
    "caps": Caps, "sandbox": Sandbox, "timeouts": Timeouts, "streams": Streams,
    "upkeep": Upkeep, "membership": Membership, "pool": Pool, "holders": Holders,
    "metrics": Metrics, "flower": Flower, "egress": Egress, "api": Api, "tenancy": Tenancy,
    "collect": Collect, "objects": Objects, "secrets": Secrets,
}
# Each section field's own variable name (AIRLOCK_<name>), as (section, field).
FLAT: dict[str, tuple[str, str]] = {
    (info.alias or name): (section, name)
    for section, model in SECTIONS.items() for name, info in model.model_fields.items()
}
