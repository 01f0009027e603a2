"""One job container: prepared (created, started, launcher up) ahead of its job, run once, destroyed.

``prepare`` leaves the launcher waiting on its stdin FIFO, so a sandbox can be made before its
job is known (the warm pool) or right when it is (a cold job): the run path is the same. The
job's stdin, stdout and stderr are FIFOs between the worker and the container
(``workers/pipes.py``), not the engine's attach stream. ``destroy`` is always called, from a
``finally``; it never raises, and what it cannot remove the reaper will.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import docker.errors
import structlog

from base.errors import AirlockError, InfrastructureError
from base.limits import Limits
from workers import cgroup, pipes
from workers.capper import OutputCapper
from workers.engine import call, job_calls, translated
from workers.pipes import Pipes
from workers.spec import CPU_PERIOD_US, LaunchPlan, build_create_kwargs
from workers.storage import Volume, Volumes
from workers.verdict import Evidence

log = structlog.get_logger(__name__)

Sink = Callable[[str, bytes | memoryview], None]
Hold = Callable[[int], bool]  # "wait before reading this many more bytes of output"
DRAIN_AFTER_KILL_S = 3.0
TICK_S = 0.1
PIDS_POLL_S = 0.25
MEMORY_SLACK = 1024**2  # peak within this of the limit counts as "at the limit"
# From start until the launcher opens its stdin; it does so at once. Below the launcher's own
# STDIO_WAIT_S, so a launcher never gives up on a worker still waiting for it.
LAUNCHER_UP_S = 20.0
READ_BYTES = pipes.PIPE_BYTES
WRITE_BYTES = 65536
HOLD_TICK_S = 0.002  # while held, how often to look again


@dataclass
class Sandbox:
    api: docker.APIClient
    plan: LaunchPlan
    volume: Volume
    container_id: str
    pipes: Pipes
    prepared_at: float = field(default_factory=time.monotonic)
    destroyed: bool = False


@dataclass(frozen=True, slots=True)
class RunOutcome:
    evidence: Evidence
    stdout: bytes
    stderr: bytes
    stdout_total: int
    stderr_total: int
    wall_ms: int
    cpu_ms: int | None
    peak_memory_bytes: int | None
    disk_used_bytes: int | None


def prepare(api: docker.APIClient, plan: LaunchPlan,
            volumes: Volumes) -> Sandbox:
    """Make the job's storage and FIFOs, create and start its container, and wait until the
    launcher holds its stdin open (so a pooled sandbox is known to be up)."""
    volume = volumes.create(plan.name, plan.limits.disk_bytes)
    container_id = ""
    io: Pipes | None = None
    try:
        io = pipes.make(plan.io_folder)
        kwargs = build_create_kwargs(_with_binds(plan, volume))
        calls = job_calls(api)
        container_id = call("create container", lambda: calls.create(kwargs))
        call("start container", lambda: calls.start(container_id))
        if not pipes.connect_stdin(io, LAUNCHER_UP_S):
            raise InfrastructureError(f"the launcher of {plan.name} did not open its stdin within"
                                      f" {LAUNCHER_UP_S:.0f} s of its start")
        return Sandbox(api, plan, volume, container_id, io)
    except BaseException:
        if io is not None:
            io.close()
        remove_container(api, container_id or plan.name)
        pipes.remove(plan.io_folder)
        volumes.destroy(volume)
        cgroup.remove_parent(plan.cgroup_parent)
        raise


def _with_binds(plan: LaunchPlan, volume: Volume) -> LaunchPlan:
    if not volume.binds:
        return plan
    from dataclasses import replace

    return replace(plan, binds=dict(volume.binds))


def apply_limits(sandbox: Sandbox, limits: Limits) -> None:
    """Give a started sandbox the limits of the job it is about to run (warm pool path)."""
    old = sandbox.plan.limits
    if (limits.memory_bytes, limits.cpus, limits.pids) == (old.memory_bytes, old.cpus, old.pids):
        return  # timeout and output are the worker's to enforce; the disk bound is fixed
    body = {"Memory": limits.memory_bytes, "MemorySwap": limits.memory_bytes,
            "CpuPeriod": CPU_PERIOD_US, "CpuQuota": int(limits.cpus * CPU_PERIOD_US),
            "PidsLimit": limits.pids}
    calls = job_calls(sandbox.api)
    call("update limits", lambda: calls.update(sandbox.container_id, body))


def run(sandbox: Sandbox, payload: bytes, limits: Limits, *, keep_bytes: int,
        sink: Sink | None = None, hold: Hold | None = None,
        cancel: threading.Event | None = None,
        volumes: Volumes | None = None) -> RunOutcome:
    """Feed the job, relay its output, enforce the wall timeout, and collect the evidence.

    While ``hold`` says so, output is not read: the pipes fill and the job's writes wait (the
    relay is behind). The deadline, cancellation and limits are still watched meanwhile."""
    io, api, cid = sandbox.pipes, sandbox.api, sandbox.container_id
    capper = OutputCapper(limits.output_bytes, keep_bytes)
    names = {io.out: "stdout", io.err: "stderr"}
    reading = set(names)  # read ends not yet at EOF: both reach it when the container ends
    view, sent = memoryview(payload), 0
    started = time.monotonic()
    deadline = started + limits.timeout_s
    drain_until: float | None = None
    timed_out = cancelled = False
    pids_events, next_pids = 0, started + PIDS_POLL_S
    oom_events = 0

    def kill(reason: str) -> None:
        nonlocal drain_until
        if drain_until is None:
            drain_until = time.monotonic() + DRAIN_AFTER_KILL_S
            log.info("job.kill", container=cid[:12], reason=reason)
            # In a thread: this loop keeps draining the pipes meanwhile.
            threading.Thread(target=_kill, args=(api, cid), daemon=True).start()

    while reading:
        now = time.monotonic()
        if drain_until is None:
            if now >= deadline:
                timed_out = True
                kill("timeout")
            elif cancel is not None and cancel.is_set():
                cancelled = True
                kill("cancelled")
        elif now >= drain_until:
            break
        if now >= next_pids:
            pids_events = max(pids_events, cgroup.pids_max_events(sandbox.plan.cgroup_parent, cid))
            oom_events = max(oom_events, cgroup.oom_kills(sandbox.plan.cgroup_parent, cid))
            next_pids = now + PIDS_POLL_S
        wait = max(0.0, min(TICK_S, deadline - now if drain_until is None else drain_until - now))
        held = drain_until is None and hold is not None and hold(READ_BYTES)
        writing = [io.stdin] if io.stdin is not None else []
        readable, writable, _ = select.select([] if held else list(reading), writing, [],
                                              min(wait, HOLD_TICK_S) if held else wait)
        if writable and io.stdin is not None:
            try:
                sent += os.write(io.stdin, view[sent: sent + WRITE_BYTES])
            except BlockingIOError:
                pass
            except BrokenPipeError:
                sent = len(view)  # the job stopped reading its stdin; that is its business
            if sent >= len(view):
                io.close_stdin()  # the job's EOF
        for fd in readable:
            try:
                data = os.read(fd, READ_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                reading.discard(fd)
                continue
            taken = capper.feed(names[fd], data)
            if taken and sink is not None:
                sink(names[fd], taken)
        if capper.exceeded:
            kill("output_limit")
    wall_ms = int((time.monotonic() - started) * 1000)
    # Last look at the leaf before the engine removes it with the stopped container.
    pids_events = max(pids_events, cgroup.pids_max_events(sandbox.plan.cgroup_parent, cid))
    oom_events = max(oom_events, cgroup.oom_kills(sandbox.plan.cgroup_parent, cid))
    io.close()
    if drain_until is not None and time.monotonic() >= drain_until:
        log.warning("job.drain_timeout", container=cid[:12])
    status = _wait_exit(api, cid)
    # The engine's OOMKilled flag, asked only when the job did not exit cleanly: on a clean exit
    # the memory cgroup's own count (read above, while the leaf existed) is the evidence.
    state = ({} if status == 0 and not oom_events
             else call("inspect", lambda: job_calls(api).inspect(cid))["State"])
    usage = cgroup.usage(sandbox.plan.cgroup_parent)
    disk = volumes.usage(sandbox.volume) if volumes is not None else None
    out, err = capper.streams["stdout"], capper.streams["stderr"]
    evidence = Evidence(
        exit_code=status,
        oom_killed=bool(state.get("OOMKilled")),
        oom_events=max(oom_events, cgroup.oom_kills(sandbox.plan.cgroup_parent, cid)),
        memory_at_limit=usage.peak_memory_bytes is not None
        and usage.peak_memory_bytes >= limits.memory_bytes - MEMORY_SLACK,
        timed_out=timed_out,
        cancelled=cancelled,
        output_exceeded=capper.exceeded,
        bytes_dropped=capper.dropped,
        pids_max_events=max(pids_events, usage.pids_max_events),
        pids_peak=usage.pids_peak,
        pids_limit=limits.pids,
        disk_full=disk is not None and disk >= sandbox.plan.limits.disk_bytes - 1024**2,
    )
    return RunOutcome(evidence, bytes(out.head), bytes(err.head), out.total, err.total, wall_ms,
                      usage.cpu_ms, usage.peak_memory_bytes, disk)


def _wait_exit(api: docker.APIClient, cid: str) -> int | None:
    # docker-py#1966: wait(timeout=) may raise a connection error rather than a read timeout.
    try:
        with translated("wait"):
            return job_calls(api).wait(cid, timeout=15)
    except Exception as exc:
        log.warning("job.wait_failed", container=cid[:12], error=str(exc))
        _kill(api, cid)
        return None


def _kill(api: docker.APIClient, cid: str) -> None:
    try:
        job_calls(api).kill(cid)
    except Exception:
        pass  # already gone or stopping, or the engine is away: best effort (the reaper follows)


def remove_container(api: docker.APIClient, cid: str) -> bool:
    """Force-remove a container, retried; False when it is left to the reaper. Never raises."""
    for attempt in range(3):
        try:
            job_calls(api).remove(cid)
            return True
        except docker.errors.NotFound:
            return True
        except Exception as exc:
            log.warning("container.remove_failed", container=cid[:12], error=str(exc),
                        attempt=attempt + 1)
            time.sleep(0.2 * (attempt + 1))
    return False


def remove_leftovers(volumes: Volumes, io_dir: str, name: str) -> None:
    """Remove what the container called ``name`` had beside it (its volume, FIFO folder and
    cgroup parent), once it is gone or was never made. Never raises: what stays is logged."""
    try:
        volumes.destroy(volumes.named(name))
    except AirlockError as exc:
        log.warning("volume.destroy_failed", name=name, error=str(exc))
    pipes.remove(pipes.folder(io_dir, name))
    cgroup.remove_parent(cgroup.parent_for(name))


def destroy(sandbox: Sandbox, volumes: Volumes) -> bool:
    """Remove the container, its storage and its cgroup parent. Never raises."""
    if sandbox.destroyed:
        return True
    sandbox.destroyed = True
    sandbox.pipes.close()
    removed = remove_container(sandbox.api, sandbox.container_id)
    pipes.remove(sandbox.plan.io_folder)
    try:
        volumes.destroy(sandbox.volume)
    except Exception as exc:
        log.warning("volume.destroy_failed", volume=str(sandbox.volume.path), error=str(exc))
    cgroup.remove_parent(sandbox.plan.cgroup_parent)
    return removed
