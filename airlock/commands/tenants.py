"""``airlock tenant``, ``airlock key`` and ``airlock api``: who may use the HTTP API, and the
API itself. Run on the control plane, with the database's URL and the keys' server secret."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from airlock.cli_kit import BadInput
from airlock.cli_kit import settings as _settings
from airlock.terminal import one_line
from base.errors import AirlockError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"^(\d{1,6})([smhdw])$")


def expiry(text: str | None, now: datetime) -> datetime | None:
    """``30d``, ``12h``, ... from now, or an ISO date (UTC unless it says); None: never."""
    if text is None:
        return None
    found = DURATION.match(text.strip())
    if found:
        return now + timedelta(seconds=int(found.group(1)) * UNITS[found.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise BadInput(f"--expires: {text!r} is neither a duration (30d, 12h) nor a date") from exc
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= now:
        raise BadInput(f"--expires: {text} has passed")
    return when


def _tenants() -> Any:
    from tasks.store import make_engine
    from tasks.tenancy import TenantStore

    return TenantStore(make_engine(_settings().database_url))


@click.group()
def tenant() -> None:
    """Tenants: whose jobs are whose."""


@tenant.command("create")
@click.argument("name")
def tenant_create(name: str) -> None:
    try:
        created = _tenants().create(name)
    except AirlockError as exc:
        raise BadInput(str(exc)) from exc
    click.echo(f"tenant {name}: {'created' if created else 'exists already'}")


@tenant.command("list")
def tenant_list() -> None:
    """Tenants, when each was made, and its own egress endpoints."""
    for row in _tenants().rows():
        own = ",".join(row.get("egress_domains") or ()) or "-"
        click.echo(f"{row['name']}\t{row['created_at']:%Y-%m-%d %H:%M:%S}\t{own}")


@tenant.command("set-egress")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("domains", nargs=-1, metavar="DOMAIN...")
@click.option("--clear", is_flag=True, help="No endpoints of its own: the common allowlist only.")
def tenant_set_egress(tenant_name: str, domains: tuple[str, ...], clear: bool) -> None:
    """Set the endpoints the tenant's egress jobs may reach beside the fleet's common allowlist
    (.example.org: the domain and its subdomains). Replaces its list; the proxy sees the change
    within AIRLOCK_EGRESS_REFRESH_S, without a restart."""
    if bool(domains) == clear:
        raise BadInput("give the tenant's domains, or --clear (not both)")
    store = _tenants()
    try:
        found = store.set_egress(tenant_name, () if clear else domains)
    except AirlockError as exc:
        raise BadInput(str(exc)) from exc
    if not found:
        click.echo(f"airlock: no tenant {one_line(tenant_name)[:64]}", err=True)
        sys.exit(1)
    own = store.egress_domains(tenant_name)
    click.echo(f"tenant {tenant_name}: egress {', '.join(own) if own else 'the common allowlist only'}")


@click.group()
def key() -> None:
    """API keys: a tenant's, each with a scope (read, submit, admin)."""


@key.command("create")
@click.argument("tenant_name", metavar="TENANT")
@click.option("--scope", type=click.Choice(["read", "submit", "admin"]), default="submit",
              show_default=True, help="read: its tenant's jobs; submit: also submit and cancel"
                                      " them; admin: every tenant's.")
@click.option("--expires", help="When it stops working: 30d, 12h, or a date (default: never).")
def key_create(tenant_name: str, scope: str, expires: str | None) -> None:
    """Print a new key, once: only its hash is kept."""
    from tasks.keys import Scope

    s = _settings()
    if s.api.key_secret is None:
        raise BadInput("AIRLOCK_API_KEY_SECRET is not set: keys are stored as its HMAC")
    made = _tenants().create_key(tenant_name, Scope(scope), s.api.key_secret.get_secret_value()
                                 .encode(), expiry(expires, datetime.now(UTC)))
    click.echo(f"key {made.key_id} for tenant {tenant_name} (scope {scope}); it is shown once:",
               err=True)
    click.echo(made.token)


@key.command("revoke")
@click.argument("key_id")
def key_revoke(key_id: str) -> None:
    """Revoke a key: refused by every API process within AIRLOCK_API_KEY_CACHE_S (5 s)."""
    if not _tenants().revoke_key(key_id):
        click.echo(f"airlock: no key {one_line(key_id)[:40]} to revoke (unknown, or revoked)",
                   err=True)
        sys.exit(1)
    click.echo(f"key {key_id}: revoked (refused everywhere within {_settings().api.key_cache_s:g} s)")


@key.command("list")
@click.argument("tenant_name", metavar="[TENANT]", required=False)
def key_list(tenant_name: str | None) -> None:
    """Keys by id, tenant, scope and state (never the keys themselves)."""
    now = datetime.now(UTC)
    for row in _tenants().keys(tenant_name):
        state = row.refusal(now) or (f"expires {row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at
                                     else "active")
        click.echo(f"{row.key_id}\t{row.tenant}\t{row.scope}\t{state}")


@click.command()
@click.option("--host", help="Address to bind (default: AIRLOCK_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: AIRLOCK_API_PORT, 8080).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API (put TLS in front of it: docs/api.md)."""
    from airlock.api.app import serve
    from base.errors import HostNotSafe

    try:
        serve(_settings(), host, port)
    except HostNotSafe as exc:
        click.echo(f"airlock api: refusing to start: {exc}", err=True)
        sys.exit(3)
