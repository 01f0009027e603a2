"""A job's resource limits: the one place a limit is named.

``Limits`` is the value the worker applies. Each of its fields carries its ``LimitInfo``: the
fleet's default, maximum and minimum, its unit and its command-line flag. The settings'
bounds (``config.settings``), the job contract's optional limits (``tasks.contract``) and the
CLI's options (``airlock.cli``) are all built from ``LIMITS``, so adding a limit means adding
a field here, plus its enforcement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Unit = Literal["seconds", "cpus", "bytes", "processes"]
GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True, slots=True)
class LimitInfo:
    name: str
    kind: type[int] | type[float]
    default: float
    maximum: float
    minimum: float
    unit: Unit
    flag: str  # the CLI option, e.g. --timeout
    help: str


def _limit(kind: type[int] | type[float], unit: Unit, flag: str, help: str, *, default: float,
           maximum: float, minimum: float) -> Any:
    info = {"kind": kind, "unit": unit, "flag": flag, "help": help, "default": default,
            "maximum": maximum, "minimum": minimum}
    return field(metadata={"limit": info})


@dataclass(frozen=True, slots=True)
class Limits:
    timeout_s: float = _limit(float, "seconds", "--timeout", "Wall-clock limit.",
                              default=30.0, maximum=600.0, minimum=0.1)
    cpus: float = _limit(float, "cpus", "--cpus", "CPU time.",
                         default=2.0, maximum=2.0, minimum=0.05)
    memory_bytes: int = _limit(int, "bytes", "--memory", "Memory, without swap.",
                               default=4 * GiB, maximum=4 * GiB, minimum=16 * MiB)
    pids: int = _limit(int, "processes", "--pids", "Processes and threads at once.",
                       default=256, maximum=256, minimum=8)
    output_bytes: int = _limit(int, "bytes", "--output", "Output, stdout and stderr together.",
                               default=4 * MiB, maximum=64 * MiB, minimum=1024)
    disk_bytes: int = _limit(int, "bytes", "--disk",
                             "Disk, /workspace, /opt/venv and home together.",
                             default=5 * GiB, maximum=5 * GiB, minimum=16 * MiB)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


LIMITS: tuple[LimitInfo, ...] = tuple(
    LimitInfo(name=f.name, **f.metadata["limit"]) for f in fields(Limits))
BY_NAME = {info.name: info for info in LIMITS}


def column(which: Literal["default", "maximum", "minimum"]) -> dict[str, float | int]:
    """One column of the table, each value of its limit's kind (the fleet's built-in bounds)."""
    return {info.name: info.kind(getattr(info, which)) for info in LIMITS}
