"""``airlock fleet status | drain HOST | undrain HOST``: the fleet's Docker hosts, as ops see
them, and taking one out of service (for an upgrade) and back."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from airlock.cli_kit import settings as _settings

EXIT_NOT_EMPTY = 1


def _db() -> tuple[Any, Any]:
    from tasks.store import make_engine

    s = _settings()
    return s, make_engine(s.database_url)


def _fail(exc: Exception) -> None:
    click.echo(f"airlock fleet: {exc}", err=True)
    sys.exit(2)


@click.group()
def fleet() -> None:
    """The fleet's Docker hosts: status, drain, undrain."""


@fleet.command()
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
def status(as_json: bool) -> None:
    """Every host: state, engine, versions, slots in use, pool, last heartbeat."""
    from airlock import fleetview
    from base.errors import AirlockError
    from tasks.hosts import listing

    s, db = _db()
    try:
        rows, clock = listing(db)
    except AirlockError as exc:
        _fail(exc)
    finally:
        db.dispose()
    silent = s.membership.silent_after_s
    if as_json:
        click.echo(json.dumps([fleetview.as_dict(r, clock, silent) for r in rows], indent=2))
        return
    if not rows:
        click.echo("no host has joined this fleet yet (a worker joins when it starts)")
        return
    for line in fleetview.plain([fleetview.cells(r, clock, silent) for r in rows]):
        click.echo(line)


@fleet.command()
@click.argument("host")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the host's running jobs have finished.")
@click.option("--timeout", type=float, default=None,
              help="Seconds to wait at most (default: Celery's hard time limit, 770 s).")
def drain(host: str, wait: bool, timeout: float | None) -> None:
    """Stop HOST taking new jobs; its running jobs finish. Survives a restart of its worker."""
    from base.errors import AirlockError
    from tasks import drain as d

    s, db = _db()
    try:
        row, answered = d.drain(s, db, host)
        click.echo(f"{host}: drained; " + ("its worker stopped taking jobs from " + row.queue
                                           if answered else "its worker did not answer (down?):"
                                           " it starts drained"))
        if not wait:
            return
        limit = s.hard_time_limit_s if timeout is None else timeout

        def progress(h: Any, waited: float) -> None:
            if int(waited) % 10 == 0:
                click.echo(f"{host}: waiting ({waited:.0f} s): {h.describe()}")

        left, waited = d.wait_empty(s, db, row, limit, progress)
    except AirlockError as exc:
        _fail(exc)
    finally:
        db.dispose()
    if not left.empty:
        click.echo(f"{host}: not empty after {waited:.0f} s: {left.describe()}", err=True)
        sys.exit(EXIT_NOT_EMPTY)
    click.echo(f"{host}: empty after {waited:.1f} s (no job running, none held)")


@fleet.command()
@click.argument("host")
def undrain(host: str) -> None:
    """Let HOST take jobs again."""
    from base.errors import AirlockError
    from tasks import drain as d

    s, db = _db()
    try:
        row, answered = d.drain(s, db, host, drained=False)
    except AirlockError as exc:
        _fail(exc)
    finally:
        db.dispose()
    click.echo(f"{host}: serving; " + (f"its worker takes jobs from {row.queue} again"
                                       if answered else "its worker did not answer (down?):"
                                       " it starts serving"))
