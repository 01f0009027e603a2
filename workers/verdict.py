"""Verdicts are values, not exceptions: what ended a job, decided from raw evidence."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

SIGKILL = 9
SIGSYS = 31


class Verdict(enum.StrEnum):
    OK = "ok"
    NONZERO_EXIT = "nonzero_exit"
    SIGNALED = "signaled"
    TIMEOUT = "timeout"
    OOM = "oom"
    OUTPUT_LIMIT = "output_limit"
    PIDS_LIMIT = "pids_limit"
    DISK_LIMIT = "disk_limit"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Evidence:
    """The raw facts a verdict is decided from; stored beside it. Every fact comes from the
    kernel, the engine, the launcher's status pipe or Airlock's own actions: none from what
    the job can choose (an exit status of 137 is not a SIGKILL, nor an OOM)."""

    exit_code: int | None  # the launcher's view (128 + S for a signal), else the engine's
    signal: int | None = None  # the signal that ended the job's main process (the launcher saw it)
    ended: str | None = None  # the launcher's word: exit, signal, deadline, launcher; None: killed
    oom_killed: bool = False  # the engine's flag
    timed_out: bool = False
    cancelled: bool = False
    output_exceeded: bool = False
    bytes_dropped: int = 0
    pids_max_events: int = 0  # refused forks seen in the container's pids.events
    disk_full: bool = False  # the volume's quota group is within 1 MiB of the bound
    oom_events: int = 0  # OOM kills (or OOM events) the kernel counted in the memory cgroup
    memory_at_limit: bool = False  # peak memory reached the limit (within a page or so)
    pids_peak: int | None = None  # most processes at once (the parent cgroup's pids.peak)
    pids_limit: int | None = None

    @property
    def pids_capped(self) -> bool:
        """The job ran into its pids cap: a fork was refused, or the count reached the cap."""
        if self.pids_max_events > 0:
            return True
        peak, cap = self.pids_peak, self.pids_limit
        return peak is not None and cap is not None and peak >= cap

    @property
    def seccomp_killed(self) -> bool:
        """Ended by SIGSYS, as the launcher saw it: what seccomp's kill action (a foreign
        syscall ABI) sends. A job can also raise SIGSYS itself; an EPERM/ENOSYS denial leaves
        no trace at all."""
        return self.signal == SIGSYS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"pids_capped": self.pids_capped,
                               "seccomp_killed": self.seccomp_killed}


def classify(ev: Evidence) -> Verdict:
    """The first matching row wins; Airlock's own kills outrank the job's exit status. Memory
    takes the kernel's word (its OOM count, or the engine's flag, which it got from the kernel):
    a job that exits 137 after filling its memory was not killed by the OOM killer."""
    if ev.cancelled:
        return Verdict.CANCELLED
    if ev.timed_out:
        return Verdict.TIMEOUT
    if ev.output_exceeded:
        return Verdict.OUTPUT_LIMIT
    if ev.oom_killed or ev.oom_events:
        return Verdict.OOM
    if ev.exit_code is None:
        return Verdict.ERROR
    if ev.exit_code == 0 and ev.signal is None:
        return Verdict.OK
    if ev.disk_full:
        return Verdict.DISK_LIMIT
    if ev.pids_capped:
        return Verdict.PIDS_LIMIT
    if ev.signal is not None:
        return Verdict.SIGNALED
    return Verdict.NONZERO_EXIT
