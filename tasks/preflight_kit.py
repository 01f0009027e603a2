"""What the preflight's canaries are made of (``tasks.preflight`` runs them): a canary, what the
runner saw of it, and what came of it. Pure."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.runner import RunOutcome
from workers.verdict import Verdict, classify


@dataclass(frozen=True, slots=True)
class Seen:
    """What the runner saw of one canary: the judges' only input."""

    verdict: Verdict
    stdout: str
    evidence: dict[str, Any]
    peak_memory_bytes: int | None = None
    disk_used_bytes: int | None = None

    @classmethod
    def from_outcome(cls, run: RunOutcome) -> Seen:
        return cls(classify(run.evidence), run.stdout.decode("utf-8", "replace"),
                   run.evidence.as_dict(), run.peak_memory_bytes, run.disk_used_bytes)


Judge = Callable[[Seen], "str | None"]  # None: contained; otherwise why not


def last_json(seen: Seen) -> dict[str, Any] | None:
    """The JSON object on the canary's last line of output, if it printed one."""
    try:
        value = json.loads(seen.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class Canary:
    """A job (``spec``, through the contract) and its judge; ``secrets`` are handed to it as a
    worker hands a job its tenant's secrets (the launcher's frame)."""

    name: str
    spec: dict[str, Any]
    judge: Judge
    secrets: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CanaryResult:
    name: str
    contained: bool
    detail: str
    verdict: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "contained": self.contained, "detail": self.detail,
                "verdict": self.verdict, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True, slots=True)
class PreflightResult:
    """``ok``: every canary contained and no runtime check refused. The inner-sandbox canary
    (where an agent profile is configured) is apart: where it is not contained, the worker
    still serves other jobs and refuses those of inner-sandbox profiles (``inner_refusal``)."""

    ok: bool
    canaries: tuple[CanaryResult, ...]
    runtime: dict[str, str] = field(default_factory=dict)  # name -> "status: detail"
    seconds: float = 0.0
    inner: Mapping[str, CanaryResult] = field(default_factory=dict)  # by inner-sandbox profile

    @property
    def failures(self) -> list[str]:
        out = [f"{c.name}: {c.detail}" for c in self.canaries if not c.contained]
        return out + [f"{k}: {v}" for k, v in self.runtime.items() if v.startswith("refuse")]

    def inner_refusal(self, profile: str) -> str | None:
        """Why jobs of this inner-sandbox profile are refused here; None when it held."""
        seen = self.inner.get(profile)
        if seen is None:
            return "the preflight did not check the inner sandbox on this worker"
        return None if seen.contained else seen.detail

    def summary(self) -> str:
        parts = [f"{c.name} {'ok' if c.contained else 'NOT CONTAINED'} {c.seconds:.1f}s"
                 for c in self.canaries]
        inner = {c.name: c for c in self.inner.values()}.values()  # profiles of one image share
        parts += [f"{c.name} {'ok' if c.contained else 'NOT HELD (its jobs refused)'} {c.seconds:.1f}s"
                  for c in inner]
        return f"preflight {'ok' if self.ok else 'FAILED'} in {self.seconds:.1f}s: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "runtime": self.runtime,
                "canaries": [c.as_dict() for c in self.canaries],
                "inner_sandbox": {p: c.as_dict() for p, c in self.inner.items()}}
