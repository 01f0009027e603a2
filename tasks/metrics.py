"""Prometheus metrics of a worker (``AIRLOCK_METRICS_PORT``; off when unset).

Celery's prefork pool runs jobs in child processes, so the metrics use prometheus-client's
multiprocess mode: every process writes its values to files in one directory, and the main
process's endpoint adds them up. ``enable`` must run in the main process before the pool
forks; until it has, every hook here is a no-op (the CLI, the client, tests).

    airlock_jobs_total{verdict}                counter   finished jobs
    airlock_job_duration_seconds{verdict}      histogram queued → result stored
    airlock_job_phase_seconds{phase}           histogram queued, container_start, run,
                                                         collect, destroy, persist
    airlock_containers_running{role}           gauge     this fleet's running containers
    airlock_reaper_removals_total{reason}      counter   containers the reaper removed
    airlock_preflight_status{check}            gauge     1 passed, 0 failed
    airlock_heartbeat_timestamp_seconds        gauge     the last good housekeeping pass
    airlock_worker_info{host,version,engine_version}  gauge  1: who this worker is
    airlock_host_drained                       gauge     1 while an operator drained it
    airlock_queue_length                       gauge     messages waiting in its queue
    airlock_disk_bytes{store,kind}             gauge     volumes and spool: size, free
    airlock_redis_memory_bytes{kind}           gauge     Redis's used and maxmemory
    airlock_tenant_jobs{tenant,state}          gauge     waiting, in_flight (the fleet's)
    airlock_tenant_usage_today{tenant,kind}    gauge     jobs, cpu_seconds, wall_seconds,
                                                         memory_gib_seconds, egress_bytes

Labels are bounded: verdicts, phases, roles, reasons and checks are Airlock's own words, a
store is "volumes" or "spool", a kind one of two; a worker has one host, version and engine;
tenants are the busiest ``AIRLOCK_METRICS_TENANTS`` (20) by name, the rest "other".
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.reaper import Reason
from workers.verdict import Verdict

# phases key of the result record → phase label
PHASES = {
    "queue_wait_ms": "queued",
    "container_ready_ms": "container_start",
    "run_ms": "run",
    "collect_ms": "collect",
    "destroy_ms": "destroy",
    "persist_ms": "persist",
}
# Jobs run from milliseconds to 10 minutes; phases from sub-millisecond to minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
PHASE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REAPER_REASONS = tuple(str(r) for r in Reason)


def phase_seconds(phases: Mapping[str, Any] | None) -> dict[str, float]:
    """The result record's phase timings (milliseconds) as labelled seconds."""
    out = {}
    for key, label in PHASES.items():
        value = (phases or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            out[label] = value / 1000.0
    return out


def total_seconds(phases: Mapping[str, Any] | None) -> float | None:
    """From queued to stored: the sum of the phases, or None without a run to measure."""
    seconds = phase_seconds(phases)
    return sum(seconds.values()) if "run" in seconds else None


@dataclass(frozen=True)
class _Metrics:
    jobs: Any
    duration: Any
    phases: Any
    containers: Any
    reaped: Any
    preflight: Any
    heartbeat: Any
    info: Any
    drained: Any
    queue: Any
    disk: Any
    redis: Any
    directory: Path


_metrics: _Metrics | None = None


def prepare_directory(path: str | None) -> Path:
    """An empty directory for this worker's metric files (stale files would be added up)."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="airlock-metrics-"))
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def enable(directory: Path) -> None:
    """Switch prometheus-client to multiprocess mode in ``directory`` and create the metrics.

    The environment variable is how prometheus-client finds the directory in every process;
    the value class is reset because prometheus-client may have been imported already."""
    global _metrics
    os.environ[MULTIPROC_ENV] = str(directory)
    from prometheus_client import Counter, Gauge, Histogram, values

    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    # registry=None: the files are the registry; the endpoint's collector reads them.
    _metrics = _Metrics(
        jobs=Counter("airlock_jobs_total", "Finished jobs by verdict.", ["verdict"],
                     registry=None),
        duration=Histogram("airlock_job_duration_seconds",
                           "From queued to result stored, by verdict.", ["verdict"],
                           buckets=DURATION_BUCKETS, registry=None),
        phases=Histogram("airlock_job_phase_seconds", "Time spent in each phase of a job.",
                         ["phase"], buckets=PHASE_BUCKETS, registry=None),
        containers=Gauge("airlock_containers_running",
                         "This fleet's running containers on this engine, by role.", ["role"],
                         multiprocess_mode="mostrecent", registry=None),
        reaped=Counter("airlock_reaper_removals_total", "Containers the reaper removed.",
                       ["reason"], registry=None),
        preflight=Gauge("airlock_preflight_status", "Preflight checks: 1 passed, 0 failed.",
                        ["check"], multiprocess_mode="mostrecent", registry=None),
        heartbeat=_gauge("airlock_heartbeat_timestamp_seconds",
                         "When this worker last completed a housekeeping pass (Unix time)."),
        info=_gauge("airlock_worker_info", "This worker: its host, code and engine versions.",
                    ["host", "version", "engine_version"]),
        drained=_gauge("airlock_host_drained", "1 while this host is drained (no new jobs)."),
        queue=_gauge("airlock_queue_length", "Messages waiting in this worker's queue."),
        disk=_gauge("airlock_disk_bytes", "The host's job stores: size and free bytes.",
                    ["store", "kind"]),
        redis=_gauge("airlock_redis_memory_bytes", "Redis's memory: used and its maxmemory.",
                     ["kind"]),
        directory=directory,
    )
    _seed(_metrics)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Any:
    from prometheus_client import Gauge

    return Gauge(name, doc, list(labels), multiprocess_mode="mostrecent", registry=None)


def _seed(m: _Metrics) -> None:
    """Every label value known in advance, at zero: a series exists (and alert rules and the
    dashboard find it) before its first event."""
    for verdict in Verdict:
        m.jobs.labels(verdict=str(verdict))
        m.duration.labels(verdict=str(verdict))
    for phase in PHASES.values():
        m.phases.labels(phase=phase)
    for reason in REAPER_REASONS:
        m.reaped.labels(reason=reason)


def disable() -> None:
    """Forget the metrics and remove their files (the worker's shutdown)."""
    global _metrics
    if _metrics is None:
        return
    from prometheus_client import values

    values.ValueClass = values.MutexValue
    for path in _metrics.directory.glob("*.db"):
        path.unlink(missing_ok=True)
    try:
        _metrics.directory.rmdir()  # only if empty: never a tree someone pointed us at
    except OSError:
        pass
    os.environ.pop(MULTIPROC_ENV, None)
    _metrics = None


def serve(port: int, address: str) -> None:
    """The endpoint, in the main process: a daemon thread adding up every process's files."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(TENANTS)
    start_http_server(port, addr=address, registry=registry)


@dataclass(frozen=True, slots=True)
class TenantFigures:
    """One tenant's figures as the housekeeping last read them (the fleet's, from PostgreSQL:
    every worker says the same; take any one, e.g. max by tenant)."""

    waiting: int = 0
    in_flight: int = 0
    jobs_today: int = 0
    cpu_s_today: float = 0.0
    wall_s_today: float = 0.0
    memory_gib_s_today: float = 0.0
    egress_bytes_today: int = 0


def top_tenants(figures: Mapping[str, TenantFigures], most: int) -> dict[str, TenantFigures]:
    """Pure: the ``most`` busiest tenants by name (jobs today, then in flight and waiting),
    the rest added up as "other": the tenant label's values stay bounded."""
    ranked = sorted(figures, key=lambda t: (-figures[t].jobs_today, -figures[t].in_flight,
                                            -figures[t].waiting, t))
    out = {t: figures[t] for t in ranked[:most]}
    rest = [figures[t] for t in ranked[most:]]
    if rest:
        out["other"] = TenantFigures(*(sum(getattr(f, name) for f in rest)
                                       for name in TenantFigures.__dataclass_fields__))
    return out


class TenantCollector:
    """airlock_tenant_jobs{tenant,state} (waiting, in_flight) and
    airlock_tenant_usage_today{tenant,kind} (jobs, cpu_seconds, wall_seconds,
    memory_gib_seconds, egress_bytes): each scrape shows the last snapshot, so a tenant that
    left the top leaves the output (no stale series)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, TenantFigures] = {}

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily("airlock_tenant_jobs", "A tenant's jobs now: waiting their"
                                 " turn, or in flight (admitted or running).", labels=["tenant", "state"])
        used = GaugeMetricFamily("airlock_tenant_usage_today", "What a tenant's jobs that ended"
                                 " today (UTC) used.", labels=["tenant", "kind"])
        for tenant, f in self.snapshot.items():
            jobs.add_metric([tenant, "waiting"], f.waiting)
            jobs.add_metric([tenant, "in_flight"], f.in_flight)
            for kind, value in (("jobs", f.jobs_today), ("cpu_seconds", f.cpu_s_today),
                                ("wall_seconds", f.wall_s_today),
                                ("memory_gib_seconds", f.memory_gib_s_today),
                                ("egress_bytes", f.egress_bytes_today)):
                used.add_metric([tenant, kind], value)
        return [jobs, used]


TENANTS = TenantCollector()


def tenants(figures: Mapping[str, TenantFigures], most: int) -> None:
    TENANTS.snapshot = top_tenants(figures, most)


def job_finished(verdict: str, phases: Mapping[str, Any] | None) -> None:
    if _metrics is None:
        return
    _metrics.jobs.labels(verdict=verdict).inc()
    total = total_seconds(phases)
    if total is not None:
        _metrics.duration.labels(verdict=verdict).observe(total)
    for phase, seconds in phase_seconds(phases).items():
        _metrics.phases.labels(phase=phase).observe(seconds)


def containers_running(roles: Iterable[str], known: Iterable[str] = ("job", "pool")) -> None:
    """Set the gauge from one listing of the fleet's running containers (their role labels)."""
    if _metrics is None:
        return
    counts = dict.fromkeys(known, 0)
    for role in roles:
        counts[role] = counts.get(role, 0) + 1
    for role, count in counts.items():
        _metrics.containers.labels(role=role).set(count)


def reaped(reasons: Iterable[str]) -> None:
    if _metrics is None:
        return
    for reason in reasons:
        _metrics.reaped.labels(reason=reason).inc()


def set_preflight(passed: bool, check: str = "all") -> None:
    """For the preflight self-test: 1 when ``check`` passed, 0 when it failed."""
    if _metrics is None:
        return
    _metrics.preflight.labels(check=check).set(1 if passed else 0)


def heartbeat(now: float) -> None:
    if _metrics is not None:
        _metrics.heartbeat.set(now)


def worker_info(host: str, version: str, engine_version: str) -> None:
    if _metrics is not None:
        _metrics.info.labels(host=host, version=version, engine_version=engine_version).set(1)


def host_drained(drained: bool) -> None:
    if _metrics is not None:
        _metrics.drained.set(1 if drained else 0)


def queue_length(n: int) -> None:
    if _metrics is not None:
        _metrics.queue.set(n)


def disk(store: str, size: int, free: int) -> None:
    if _metrics is not None:
        _metrics.disk.labels(store=store, kind="size").set(size)
        _metrics.disk.labels(store=store, kind="free").set(free)


def redis_memory(used: int, maximum: int) -> None:
    if _metrics is not None:
        _metrics.redis.labels(kind="used").set(used)
        _metrics.redis.labels(kind="max").set(maximum)
