"""The resource limits of one job, in base units, as the worker applies them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    timeout_s: float
    cpus: float
    memory_bytes: int
    pids: int
    output_bytes: int
    disk_bytes: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "timeout_s": self.timeout_s,
            "cpus": self.cpus,
            "memory_bytes": self.memory_bytes,
            "pids": self.pids,
            "output_bytes": self.output_bytes,
            "disk_bytes": self.disk_bytes,
        }
