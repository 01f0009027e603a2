"""``airlock tenant set-quota``, ``airlock tenant show`` and ``airlock usage``: a tenant's share
of the fleet, its quotas, and what it used (docs/tenants.md)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click

from airlock.cli_kit import BadInput
from airlock.cli_kit import settings as _settings
from airlock.terminal import one_line
from base.errors import AirlockError
from base.units import parse_size

UNSET = "default"  # a quota's value that puts it back to the fleet's default


def _store() -> Any:
    from tasks.store import make_engine
    from tasks.tenancy import TenantStore

    return TenantStore(make_engine(_settings().database_url))


def count(option: str, text: str | None) -> int | str | None:
    """An option's value: a whole number, ``default`` (back to the fleet's), or unset."""
    if text is None:
        return UNSET + "?"  # not given: left as it is
    if text == UNSET:
        return None
    if not text.isdigit() or len(text) > 12:
        raise BadInput(f"{option}: {one_line(text)[:40]!r} is neither a whole number nor"
                       f" '{UNSET}'")
    return int(text)


def maxima(pairs: tuple[str, ...]) -> dict[str, float]:
    """``cpus=1``, ``memory_bytes=512m``, ... as numbers (sizes as bytes)."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise BadInput(f"--max-limit: {one_line(pair)[:60]!r} is not NAME=VALUE")
        try:
            out[name] = parse_size(value) if name.endswith("_bytes") else float(value)
        except ValueError as exc:
            raise BadInput(f"--max-limit {one_line(name)[:40]}: {exc}") from exc
    return out


@click.command("set-quota")
@click.argument("tenant_name", metavar="TENANT")
@click.option("--weight", type=float, help="Its share of the slots against others' (1).")
@click.option("--max-in-flight", metavar="N|default", help="Jobs admitted or running at once.")
@click.option("--max-queued", metavar="N|default", help="Jobs waiting to start.")
@click.option("--submissions-per-min", metavar="N|default", help="Jobs submitted a minute.")
@click.option("--cpu-s-per-day", metavar="N|default", help="CPU-seconds a day (UTC).")
@click.option("--max-limit", "max_limit", multiple=True, metavar="LIMIT=VALUE",
              help="The most a job may ask for, e.g. cpus=1, memory_bytes=1g (repeat).")
@click.option("--clear-max-limits", is_flag=True, help="No per-limit maxima of its own.")
def set_quota(tenant_name: str, weight: float | None, max_limit: tuple[str, ...],
              clear_max_limits: bool, **quotas: str | None) -> None:
    """Set a tenant's weight and quotas ('default': the fleet's, AIRLOCK_TENANT_*)."""
    values: dict[str, Any] = {name: value for name, text in quotas.items()
                              if (value := count("--" + name.replace("_", "-"), text))
                              != UNSET + "?"}
    if weight is not None:
        if not 0 < weight <= 1000:
            raise BadInput(f"--weight: {weight:g} is outside 0 (excluded)..1000")
        values["weight"] = weight
    if max_limit or clear_max_limits:
        values["max_limits"] = {} if clear_max_limits else maxima(max_limit)
    if not values:
        raise BadInput("nothing to set: give --weight, a quota or --max-limit")
    try:
        found = _store().set_quota(tenant_name, **values)
    except AirlockError as exc:
        raise BadInput(str(exc)) from exc
    if not found:
        click.echo(f"airlock: no tenant {one_line(tenant_name)[:64]}", err=True)
        sys.exit(1)
    _show(tenant_name)


@click.command("show")
@click.argument("tenant_name", metavar="TENANT")
def show(tenant_name: str) -> None:
    """A tenant's weight and quotas, its own or the fleet's default."""
    _show(tenant_name)


def _show(tenant_name: str) -> None:
    from tasks.quotas import QUOTAS, effective

    row = _store().row(tenant_name)
    if row is None:
        click.echo(f"airlock: no tenant {one_line(tenant_name)[:64]}", err=True)
        sys.exit(1)
    quota = effective(tenant_name, row, _settings().tenancy)
    click.echo(f"tenant {tenant_name}: weight {quota.weight:g}")
    for name in QUOTAS:
        value, own = getattr(quota, name), row.get(name) is not None
        shown = "none" if value is None else f"{value}"
        click.echo(f"  {name:<20} {shown}{'' if own else ' (the default)'}")
    limits = ", ".join(f"{k}={v if isinstance(v, int) else f'{v:g}'}"
                       for k, v in sorted(quota.max_limits.items())) or "the fleet's"
    click.echo(f"  {'max_limits':<20} {limits}")
    endpoints = ", ".join(row.get("egress_domains") or ()) or "none (the common allowlist only)"
    click.echo(f"  {'egress_domains':<20} {endpoints}")


@click.command()
@click.option("--tenant", "tenant_name", help="One tenant's (default: every tenant's).")
@click.option("--since", help="From this day (YYYY-MM-DD, or 7d: a week ago); default today.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per tenant and day.")
def usage(tenant_name: str | None, since: str | None, as_json: bool) -> None:
    """What tenants used, per day (UTC): jobs by verdict, CPU, wall, memory and egress."""
    from tasks.store import make_engine
    from tasks.usage import usage as read_usage

    first = since_day(since, datetime.now(UTC).date())
    try:
        found = read_usage(make_engine(_settings().database_url), tenant=tenant_name,
                           since=first)
    except AirlockError as exc:
        click.echo(f"airlock: {exc}", err=True)
        sys.exit(125)
    if as_json:
        for u in found:
            click.echo(json.dumps(u.to_json()))
        return
    _table(found)


def since_day(text: str | None, today: date) -> date:
    if text is None:
        return today
    if text.endswith("d") and text[:-1].isdigit() and len(text) <= 5:
        return today - timedelta(days=int(text[:-1]))
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise BadInput(f"--since: {one_line(text)[:40]!r} is neither YYYY-MM-DD nor Nd") from exc


def _table(found: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for name in ("day", "tenant", "jobs", "by verdict", "CPU s", "wall s", "memory GiB·s",
                 "egress"):
        table.add_column(name, justify="right" if name not in ("tenant", "by verdict") else "left")
    for u in found:
        verdicts = " ".join(f"{k} {v}" for k, v in sorted(u.jobs.items()))
        table.add_row(u.day.isoformat(), u.tenant, str(u.total_jobs), verdicts,
                      f"{u.cpu_s:.1f}", f"{u.wall_s:.1f}", f"{u.peak_memory_gib_s:.2f}",
                      _bytes(u.egress_bytes))
    Console().print(table if found else "no usage in that time")


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
