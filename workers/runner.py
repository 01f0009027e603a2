"""One job container: prepared (created, started, launcher up) ahead of its job, run once, destroyed.

``prepare`` leaves the launcher waiting on its stdin FIFO, so a sandbox can be made before its
job is known (the warm pool) or right when it is (a cold job): the run path is the same. The
job's stdin, stdout and stderr are FIFOs between the worker and the container
(``workers/pipes.py``), not the engine's attach stream. ``destroy`` is always called, from a
``finally``; it never raises, and what it cannot remove the reaper will.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace

import docker
import docker.errors
import structlog

from base.errors import AirlockError, InfrastructureError
from base.limits import Limits
from workers import cgroup, dirs, identity, inner_sandbox, pipes, spool
from workers.capper import OutputCapper
from workers.cpusets import CpuSets
from workers.engine import call, job_calls, translated
from workers.pipes import Pipes
from workers.slots import Slots
from workers.spec import CPU_PERIOD_US, LaunchPlan, build_create_kwargs
from workers.spool import Spool
from workers.storage import Volume, Volumes
from workers.verdict import Evidence
from workers.watch import Hold, Sink, Watch

log = structlog.get_logger(__name__)

MEMORY_SLACK = 1024**2  # peak within this of the limit counts as "at the limit"
# From start until the launcher opens its stdin; it does so at once. Below the launcher's own
# STDIO_WAIT_S, so a launcher never gives up on a worker still waiting for it.
LAUNCHER_UP_S = 20.0


@dataclass
class Sandbox:
    api: docker.APIClient
    plan: LaunchPlan
    volume: Volume
    container_id: str
    pipes: Pipes
    slots: Slots | None = None  # the host's table: the container's uid goes back when it goes
    cpusets: CpuSets | None = None  # the host's held cores: the container's go back likewise
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
    uid: int
    stdout_dropped: int = 0  # past the output cap
    stderr_dropped: int = 0
    stopped: bool = True  # the engine said the container exited (nothing of the job runs)
    cpuset: str = ""  # the cores the job ran on; empty: any


def prepare(api: docker.APIClient, plan: LaunchPlan, volumes: Volumes,
            slots: Slots | None = None, cpusets: CpuSets | None = None) -> Sandbox:
    """Make the job's storage and FIFOs, create and start its container, and wait until the
    launcher holds its stdin open (so a pooled sandbox is known to be up). The plan's uid was
    taken from ``slots`` for this container's name: it is given back when the container goes
    (here on a failure, else by ``destroy``); so are its cores, taken here from ``cpusets``."""
    volume = volumes.create(plan.name, plan.limits.disk_bytes, plan.uid)
    container_id = ""
    io: Pipes | None = None
    try:
        if cpusets is not None:
            plan = replace(plan, cpuset_cpus=cpusets.take(plan.name, plan.limits.cpus, time.time()))
        io = pipes.make(plan.io_folder)
        _write_identity(plan)
        kwargs = build_create_kwargs(_with_binds(plan, volume))
        calls = job_calls(api)
        container_id = call("create container", lambda: calls.create(kwargs))
        call("start container", lambda: calls.start(container_id))
        if not pipes.connect_stdin(io, LAUNCHER_UP_S):
            raise InfrastructureError(f"the launcher of {plan.name} did not open its stdin within"
                                      f" {LAUNCHER_UP_S:.0f} s of its start")
        return Sandbox(api, plan, volume, container_id, io, slots, cpusets)
    except BaseException:
        if io is not None:
            io.close()
        removed = remove_container(api, container_id or plan.name)
        pipes.remove(plan.io_folder)
        volumes.destroy(volume)
        cgroup.remove_parent(plan.cgroup_parent)
        if removed:
            _release(plan.name, slots, cpusets)
        raise


def _write_identity(plan: LaunchPlan) -> None:
    """The job's passwd and group, and an agent job's sandbox settings, in its folder."""
    try:
        with dirs.opened(plan.io_folder) as dir_fd:
            identity.write(dir_fd, plan.uid, plan.uid)
            if plan.inner_sandbox is not None:
                inner_sandbox.write(dir_fd, plan.inner_sandbox)
    except OSError as exc:
        raise InfrastructureError(f"cannot write the job's identity in {plan.io_folder}: {exc}") from exc


def _with_binds(plan: LaunchPlan, volume: Volume) -> LaunchPlan:
    if not volume.binds:
        return plan
    return replace(plan, binds=dict(volume.binds))


def apply_limits(sandbox: Sandbox, limits: Limits, cpuset: str = "") -> None:
    """Give a started sandbox the limits (and the cores) of the job it is about to run (warm
    pool path), in one update."""
    old = sandbox.plan.limits
    body: dict[str, object] = {}
    if (limits.memory_bytes, limits.cpus, limits.pids) != (old.memory_bytes, old.cpus, old.pids):
        # timeout and output are the worker's to enforce; the disk bound is fixed
        body = {"Memory": limits.memory_bytes, "MemorySwap": limits.memory_bytes,
                "CpuPeriod": CPU_PERIOD_US, "CpuQuota": int(limits.cpus * CPU_PERIOD_US),
                "PidsLimit": limits.pids}
    if cpuset and cpuset != sandbox.plan.cpuset_cpus:
        body["CpusetCpus"] = cpuset
    if not body:
        return
    calls = job_calls(sandbox.api)
    call("update limits", lambda: calls.update(sandbox.container_id, body))


def run(sandbox: Sandbox, payload: bytes, limits: Limits, *, keep_bytes: int,
        sink: Sink | None = None, hold: Hold | None = None,
        cancel: threading.Event | None = None,
        volumes: Volumes | None = None, spool: Spool | None = None,
        wait_exit: bool = True) -> RunOutcome:
    """Feed the job, relay its output (whole to ``spool``), enforce the wall timeout, and
    collect the evidence.

    While ``hold`` says so, output is not read: the pipes fill and the job's writes wait (the
    relay is behind). The deadline, cancellation and limits are still watched meanwhile.

    Without ``wait_exit``, a job whose launcher said it exited 0, with no OOM kill counted,
    is not waited for: its exit status and counters are known (the cgroup's, read now), and the
    container's own exit (a third of a trivial job's time) is left to its removal. The outcome
    then says the container was not seen to stop."""
    api, cid, parent = sandbox.api, sandbox.container_id, sandbox.plan.cgroup_parent
    capper = OutputCapper(limits.output_bytes, keep_bytes)
    seen = Watch(sandbox.pipes, payload, capper, timeout_s=limits.timeout_s,
                 cgroup_parent=parent, container_id=cid, kill=lambda: _kill(api, cid),
                 sink=sink, hold=hold, cancel=cancel, spool=spool).run()
    sandbox.pipes.close()
    said = seen.said
    clean = said is not None and said.kind == "exit" and said.value == 0
    oom_events = max(seen.oom_events, cgroup.oom_kills(parent, cid))
    waited = wait_exit or not clean or oom_events > 0
    status = _wait_exit(api, cid) if waited else None
    if waited:  # counted again once the container is seen to stop
        oom_events = max(oom_events, cgroup.oom_kills(parent, cid))
    # The engine's OOMKilled flag, asked only when the job did not end cleanly by itself.
    state = ({} if (clean or status == 0) and not oom_events
             else call("inspect", lambda: job_calls(api).inspect(cid))["State"])
    usage = cgroup.usage(parent)
    disk = volumes.usage(sandbox.volume) if volumes is not None else None
    out, err = capper.streams["stdout"], capper.streams["stderr"]
    evidence = Evidence(
        exit_code=said.exit_code if said is not None else status,
        signal=said.value if said is not None and said.kind == "signal" else None,
        ended=said.kind if said is not None else None,
        oom_killed=bool(state.get("OOMKilled")),
        oom_events=oom_events,
        memory_at_limit=usage.peak_memory_bytes is not None
        and usage.peak_memory_bytes >= limits.memory_bytes - MEMORY_SLACK,
        timed_out=seen.timed_out,
        cancelled=seen.cancelled,
        output_exceeded=capper.exceeded,
        bytes_dropped=capper.dropped,
        pids_max_events=max(seen.pids_events, usage.pids_max_events),
        pids_peak=usage.pids_peak,
        pids_limit=limits.pids,
        disk_full=disk is not None and disk >= sandbox.plan.limits.disk_bytes - 1024**2,
    )
    return RunOutcome(evidence, bytes(out.head), bytes(err.head), out.total, err.total,
                      seen.wall_ms, usage.cpu_ms, usage.peak_memory_bytes, disk, sandbox.plan.uid,
                      out.dropped, err.dropped, waited and status is not None,
                      sandbox.plan.cpuset_cpus)


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


@dataclass(frozen=True, slots=True)
class Beside:
    """Where the resources beside each container live (its volume, FIFO folder, spool folder,
    cgroup parent, slot), to find and remove them by the container's name."""

    volumes: Volumes
    io_dir: str
    spool_dir: str = ""
    slots: Slots | None = None

    def found(self) -> dict[str, float]:
        """Every name that has something here, with its newest change."""
        on_disk: dict[str, float] = {}
        places = (dirs.found(self.io_dir), self.volumes.found(),
                  dirs.found(self.spool_dir) if self.spool_dir else {}, cgroup.parent_names())
        for place in places:
            for name, mtime in place.items():
                on_disk[name] = max(on_disk.get(name, 0.0), mtime)
        return on_disk

    def remove(self, name: str) -> None:
        """Remove what the container called ``name`` had beside it and give its uid back,
        once it is gone or was never made. Never raises: what stays is logged."""
        try:
            self.volumes.destroy(self.volumes.named(name))
        except AirlockError as exc:
            log.warning("volume.destroy_failed", name=name, error=str(exc))
        pipes.remove(pipes.folder(self.io_dir, name))
        if self.spool_dir:
            spool.remove(os.path.join(self.spool_dir, name))
        cgroup.remove_parent(cgroup.parent_for(name))
        _release(name, self.slots)


def _release(name: str, slots: Slots | None, cpusets: CpuSets | None = None) -> None:
    """Give the container's uid and cores back (a failure: the reaper's sweep drops the uid
    later, and the cores go once the engine no longer runs the container)."""
    for table in (slots, cpusets):
        try:
            if table is not None:
                table.release(name)
        except AirlockError as exc:
            log.warning("slot.release_failed", name=name, error=str(exc))


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
    if removed:  # a container that may still run keeps its uid and its cores
        _release(sandbox.plan.name, sandbox.slots, sandbox.cpusets)
    return removed
