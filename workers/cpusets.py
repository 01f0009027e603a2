"""Dynamic cpusets: each job container gets ``ceil(cpus)`` of the host's least-loaded cores.

The choice is pure (``choose``). The sets held are kept in one JSON table per host, under the
same kind of ``flock`` as the host's slots (``workers.slots.locked``), so every worker process and
every worker of every engine on the host sees the others' sets. The table is not trusted to be
complete or current: an entry of this engine is kept only while its container is seen running
(the engine's list of Airlock's running containers, asked at most once per ``GRACE_S`` for an
entry) or is younger than ``GRACE_S`` (taken, its container not yet started). So a worker that
dies leaks nothing: its containers' sets go once they stop, whoever takes the next set.

A pooled container runs on every core while it waits (it does nothing); it gets its set when a
job takes it, by a live update (``runner.apply_limits``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from base.errors import InfrastructureError
from workers.slots import locked, read_table

GRACE_S = 10.0  # an entry younger than this, or seen running this recently, is not checked
ONLINE = "/sys/devices/system/cpu/online"


@dataclass(frozen=True, slots=True)
class Held:
    """One container's set: its name, its cores, whose engine, when taken, when last seen."""

    name: str
    cpus: tuple[int, ...]
    engine: str
    at: float
    seen: float


def parse(text: str) -> tuple[int, ...]:
    """The kernel's list format (``0-3,6``) as sorted core numbers."""
    cores: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return tuple(sorted(cores))


def render(cores: Iterable[int]) -> str:
    """Core numbers in the form the engine takes (``0,2,3``)."""
    return ",".join(str(c) for c in sorted(set(cores)))


def cores_for(cpus: float) -> int:
    """A ``cpus`` limit's cores, rounded up (the quota still bounds the time on them)."""
    return max(1, math.ceil(round(cpus, 6)))


def choose(online: Sequence[int], held: Iterable[Iterable[int]], cpus: float) -> tuple[int, ...]:
    """The ``cores_for(cpus)`` cores of ``online`` held by the fewest sets, the lower number
    first among equals; every online core when the job asks for as many or more."""
    load = dict.fromkeys(online, 0)
    for cores in held:
        for core in cores:
            if core in load:
                load[core] += 1
    ranked = sorted(load, key=lambda core: (load[core], core))
    return tuple(sorted(ranked[:cores_for(cpus)]))


def unchecked(table: Mapping[str, Held], engine: str, now: float, grace_s: float) -> bool:
    """Whether an entry of this engine is due a look at the engine's running containers."""
    return any(h.engine == engine and now - max(h.at, h.seen) > grace_s for h in table.values())


def pruned(table: Mapping[str, Held], running: set[str], engine: str, now: float,
           grace_s: float) -> dict[str, Held]:
    """The table after a look at this engine's running containers (by name): its entries seen
    running are marked so, those neither running nor young are gone; other engines' stay."""
    out: dict[str, Held] = {}
    for name, h in table.items():
        if h.engine != engine:
            out[name] = h
        elif name in running:
            out[name] = replace(h, seen=now)
        elif now - h.at <= grace_s:
            out[name] = h
    return out


def online_cores(path: str = ONLINE) -> tuple[int, ...]:
    try:
        with open(path) as f:
            return parse(f.read())
    except (OSError, ValueError):
        return tuple(range(os.cpu_count() or 1))


class CpuSets:
    """The host's table of held sets (``path``, with ``path``.lock beside it). ``running``
    names this engine's running Airlock containers (one engine call)."""

    def __init__(self, path: str, *, engine: str, running: Callable[[], set[str]],
                 online: Sequence[int] | None = None, grace_s: float = GRACE_S) -> None:
        self.path, self.engine, self.running, self.grace_s = Path(path), engine, running, grace_s
        self.online = tuple(online) if online is not None else online_cores()

    @property
    def everything(self) -> str:
        """Every online core, as a set (a job given it is not restricted at all)."""
        return render(self.online)

    def take(self, name: str, cpus: float, now: float) -> str:
        """The set for the container ``name`` (its own former one, if any, given back first)."""
        with locked(self.path, "host cpusets"):
            table = _load(self.path)
            table.pop(name, None)
            if unchecked(table, self.engine, now, self.grace_s):
                table = pruned(table, self.running(), self.engine, now, self.grace_s)
            chosen = choose(self.online, (h.cpus for h in table.values()), cpus)
            table[name] = Held(name, chosen, self.engine, now, now)
            _store(self.path, table)
        return render(chosen)

    def release(self, name: str) -> None:
        with locked(self.path, "host cpusets"):
            table = _load(self.path)
            if table.pop(name, None) is not None:
                _store(self.path, table)

    def held(self) -> dict[str, Held]:
        with locked(self.path, "host cpusets"):
            return _load(self.path)


def _load(path: Path) -> dict[str, Held]:
    raw = read_table(path, "host cpusets")
    return {name: Held(name, tuple(e["cpus"]), e["engine"], e["at"], e["seen"])
            for name, e in raw.get("held", {}).items()}


def _store(path: Path, table: Mapping[str, Held]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    data = {"version": 1, "held": {n: asdict(h) for n, h in table.items()}}
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)
    except OSError as exc:
        raise InfrastructureError(f"host cpusets {path}: {exc}") from exc
