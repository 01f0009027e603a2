"""``airlock worker``, ``flower``, ``doctor``, ``dead-letters`` and ``db``: running and
looking after a fleet's host."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from airlock.cli_kit import settings as _settings


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", type=int, help="Jobs at once on this host.")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None) -> None:
    """Start a Celery worker bound to this host's Docker engine."""
    from tasks.worker import start_worker

    start_worker(_settings(), concurrency=concurrency, extra=list(ctx.args))


@click.command()
@click.option("--port", type=int, help="Port (default: AIRLOCK_FLOWER_PORT, 5555).")
@click.option("--address", help="Address to bind (default: AIRLOCK_FLOWER_ADDRESS, 127.0.0.1).")
def flower(port: int | None, address: str | None) -> None:
    """Start Flower for Airlock's workers (basic auth from AIRLOCK_FLOWER_USER/_PASSWORD)."""
    from tasks.dashboard import FlowerRefused, start_flower

    try:
        start_flower(_settings(), port, address)
    except FlowerRefused as exc:
        click.echo(f"airlock flower: refusing to start: {exc}", err=True)
        sys.exit(2)


@click.command()
@click.option("--allow-known-cve", "allowed", multiple=True, metavar="CVE-ID",
              help="Accept a known runc escape (warn instead of fail); see docs/operations.md.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(allowed: tuple[str, ...], as_json: bool) -> None:
    """Check this host: engine, runc, cgroups, disk bound, seccomp, firewall, services."""
    from airlock.doctor import failed, run_checks

    checks = run_checks(_settings(), allowed)
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        _print_checks(checks)
    sys.exit(1 if failed(checks) else 0)


def _print_checks(checks: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    marks = {"ok": "[green]ok[/]", "warn": "[yellow]WARN[/]", "fail": "[bold red]FAIL[/]"}
    table = Table(title="airlock doctor", title_justify="left")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, marks[str(check.status)], check.detail)
    Console(width=max(100, Console().width)).print(table)


@click.command("dead-letters")
@click.option("--queue", help="Only this list: a queue's name, or 'unacked' (default: every list).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="The newest items shown per list.")
@click.option("--json", "as_json", is_flag=True, help="Print the items as JSON (with their bytes).")
def dead_letters(queue: str | None, limit: int, as_json: bool) -> None:
    """Show what workers took off the broker and set aside: when, where, why, a preview.

    Every byte an item holds is shown escaped (\\xNN); --json adds the kept bytes in base64."""
    import redis

    from tasks import deadletters, streams

    try:
        s = _settings()
        r = streams.connect(s.broker_url, s.sentinel_master)
        lists = {q: (r.llen(deadletters.dead_key(q)), deadletters.dead_letters(r, q, limit))
                 for q in ([queue] if queue else deadletters.dead_queues(r))}
    except redis.exceptions.RedisError as exc:
        raise click.ClickException(f"broker: {exc}") from exc
    if as_json:
        click.echo(json.dumps([{"queue": q, "count": count, "items": [
            item.as_dict() if item else None for item in items]}
            for q, (count, items) in lists.items()], indent=2))
        return
    for q, (count, items) in lists.items():
        click.echo(f"{deadletters.printable(q)}: {count} set aside, newest first")
        for item in items:
            click.echo(f"  {item.describe()}" if item else "  (not an entry of Airlock's)")


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to the configured database."""
    from tasks.migrate import upgrade

    upgrade(_settings().database_url)
    click.echo("database is at the latest migration")


