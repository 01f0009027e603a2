"""Host slots: every job container gets a kernel identity of its own, recorded in one table per
host, and the table names every side resource a container has (its volume, FIFO folder, cgroup
parent), so that nothing is left behind a container that is gone.

The kernel keeps many counters per user, not per container (inotify instances and watches,
epoll watches, POSIX message-queue bytes, pending signals, locked shared memory, pipe buffer
pages, processes): two jobs with one uid share them, and so does a host account with that uid.
So each container takes a uid (its gid the same number) from a range no account uses, and
gives it back when it is removed. The table is one JSON file under an exclusive ``flock``, on
the host's /run: every worker process and every worker of every engine on the host (they share
one kernel) allocate from it. An entry is written before anything of its container exists; a
worker that dies leaves entries behind, and the reaper of that engine and fleet drops those
whose container is gone (``workers.reaper.leftovers``), after removing what they name.

The choice of a uid is pure (``choose_uid``); the table's I/O is ``Slots``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from base.errors import InfrastructureError

VERSION = 1


@dataclass(frozen=True, slots=True)
class Slot:
    """One container's entry: its name (its side resources' too), its uid, and whose it is."""

    name: str
    uid: int
    engine: str  # the engine's ID (``docker info``): several engines may share one host
    fleet: str
    at: float  # when the entry was made (the host's clock)


def choose_uid(taken: Iterable[int], first: int, count: int, hint: int = 0) -> int | None:
    """A uid of ``first .. first + count - 1`` that is not taken, looking from ``hint`` on
    (so that consecutive jobs do not reuse the same uid at once), or None when all are."""
    busy = set(taken)
    for step in range(count):
        uid = first + (hint + step) % count
        if uid not in busy:
            return uid
    return None


class Slots:
    """The host's table (``path``, with ``path``.lock beside it)."""

    def __init__(self, path: str, *, first_uid: int, count: int, engine: str, fleet: str) -> None:
        self.path = Path(path)
        self.first_uid, self.count, self.engine, self.fleet = first_uid, count, engine, fleet

    def take(self, name: str, now: float) -> Slot:
        """A uid for the container ``name``, recorded; InfrastructureError when none is free."""
        with self._table() as table:
            if name in table:
                return table[name]
            hint = int(now * 1000) % self.count
            uid = choose_uid((s.uid for s in table.values()), self.first_uid, self.count, hint)
            if uid is None:
                raise InfrastructureError(f"every uid of {self.first_uid}+{self.count} is in use"
                                          " on this host (raise AIRLOCK_JOB_UID_COUNT)")
            table[name] = Slot(name, uid, self.engine, self.fleet, now)
            return table[name]

    def release(self, *names: str) -> None:
        with self._table() as table:
            for name in names:
                table.pop(name, None)

    def entries(self) -> list[Slot]:
        with self._table() as table:
            return list(table.values())

    @contextmanager
    def _table(self) -> Iterator[dict[str, Slot]]:
        """The table, read and (when changed) written back under the lock."""
        with locked(self.path, "host slots"):
            table = _load(self.path)
            before = dict(table)
            yield table
            if table != before:
                _store(self.path, table)


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``.lock, host-wide (every process and worker on it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InfrastructureError(f"{what} {path}: {exc}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # releases the flock


def read_table(path: Path, what: str) -> dict[str, Any]:
    """A host table's JSON (empty when there is none yet)."""
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InfrastructureError(f"{what} {path} unreadable: {exc}") from exc


def _load(path: Path) -> dict[str, Slot]:
    raw = read_table(path, "host slots")
    return {name: Slot(**entry) for name, entry in raw.get("slots", {}).items()}


def _store(path: Path, table: dict[str, Slot]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    data = {"version": VERSION, "slots": {n: asdict(s) for n, s in table.items()}}
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise InfrastructureError(f"host slots {path}: {exc}") from exc
