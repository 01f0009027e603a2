"""Draining a host: it stops taking new jobs, finishes those it has, and says when it is empty.

The flag is PostgreSQL's (``tasks.hosts``), so a worker restarted while drained starts drained
(``tasks.signals``); a running worker is told at once through Celery's remote control
(``cancel_consumer`` / ``add_consumer`` for its queue, addressed to its node alone). Jobs it
already holds run to their end within their own timeouts; none is handed back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.engine import Engine

from base.errors import AirlockError
from config.settings import Settings
from tasks import hosts
from tasks.app import app, configure
from tasks.hosts import HostRow

log = structlog.get_logger(__name__)
REPLY_TIMEOUT_S = 3.0


class NoSuchHost(AirlockError):
    """No worker of this fleet's database ever ran on that host."""


@dataclass(frozen=True, slots=True)
class Holding:
    """What a host still has: jobs PostgreSQL says it runs, and what its worker says it holds
    (None: the worker did not answer)."""

    running: int
    active: int | None
    reserved: int | None

    @property
    def empty(self) -> bool:
        return self.running == 0 and not self.active and not self.reserved

    def describe(self) -> str:
        said = ("its worker did not answer" if self.active is None
                else f"its worker holds {self.active} active, {self.reserved or 0} reserved")
        return f"{self.running} running by PostgreSQL, {said}"


def find(db: Engine, name: str) -> HostRow:
    rows, _ = hosts.listing(db)
    for row in rows:
        if row.name == name:
            return row
    known = ", ".join(r.name for r in rows) or "none yet"
    raise NoSuchHost(f"no host named {name!r} has joined this fleet (hosts: {known})")


def _answered(replies: list[dict[str, object]] | None, node: str) -> bool:
    return any(node in reply for reply in replies or [])


def set_consuming(s: Settings, host: HostRow, consuming: bool) -> bool:
    """Tell the host's running worker to take (or stop taking) its queue; whether it answered."""
    configure(s)
    control = app.control.add_consumer if consuming else app.control.cancel_consumer
    replies = control(host.queue, destination=[host.node], reply=True, timeout=REPLY_TIMEOUT_S)
    return _answered(replies, host.node)


def holding(s: Settings, db: Engine, host: HostRow) -> Holding:
    configure(s)
    inspect = app.control.inspect(destination=[host.node], timeout=REPLY_TIMEOUT_S)
    active, reserved = inspect.active(), inspect.reserved()
    return Holding(hosts.running_jobs(db, host.name),
                   len((active or {}).get(host.node, [])) if active is not None else None,
                   len((reserved or {}).get(host.node, [])) if reserved is not None else None)


def drain(s: Settings, db: Engine, name: str, *, drained: bool = True) -> tuple[HostRow, bool]:
    """Mark the host drained (or, ``drained=False``, serving again), then tell its worker;
    (the host, whether its worker answered)."""
    host = find(db, name)
    hosts.set_drained(db, name, drained)
    answered = set_consuming(s, host, consuming=not drained)
    log.info("fleet.drain" if drained else "fleet.undrain", host=name, queue=host.queue,
             worker_answered=answered)
    return host, answered


def wait_empty(s: Settings, db: Engine, host: HostRow, timeout_s: float,
               progress: Callable[[Holding, float], None] = lambda h, t: None,
               interval_s: float = 1.0) -> tuple[Holding, float]:
    """Poll until the host holds nothing (or ``timeout_s``); the last look and seconds waited."""
    t0 = time.monotonic()
    while True:
        now = holding(s, db, host)
        waited = time.monotonic() - t0
        if now.empty or waited >= timeout_s:
            return now, waited
        progress(now, waited)
        time.sleep(interval_s)
