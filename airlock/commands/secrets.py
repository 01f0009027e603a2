"""``airlock secret set|list|delete``: a tenant's job secrets (tasks/secrets.py).

A value is read from stdin (hidden, asked twice, on a terminal), never from an argument, so it
is in no shell history and no process list; nothing prints it back."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from airlock.cli_kit import BadInput
from airlock.cli_kit import settings as _settings
from base.errors import AirlockError, JobSpecError

TENANT = r"^[a-z0-9][a-z0-9-]{0,63}$"


def _store() -> Any:
    from tasks.secrets import SecretBox, SecretStore
    from tasks.store import make_engine

    s = _settings()
    return SecretStore(make_engine(s.database_url), SecretBox.from_settings(s)), s


def _checked(tenant: str, name: str | None = None) -> None:
    import re

    from tasks.contract import check_secret_name

    if not re.match(TENANT, tenant):
        raise BadInput(f"tenant: {tenant!r} is not a tenant's name (a-z, 0-9, -)")
    if name is not None:
        try:
            check_secret_name("name", name)
        except JobSpecError as exc:
            raise BadInput(str(exc)) from exc


def _read_value(cap: int) -> bytes:
    if sys.stdin.isatty():
        typed = click.prompt("value", hide_input=True, confirmation_prompt=True, err=True)
        return str(typed).encode()
    raw = sys.stdin.buffer.read(cap + 3)
    return raw.removesuffix(b"\n").removesuffix(b"\r")  # `echo`'s newline is not the value's


@click.group()
def secret() -> None:
    """A tenant's job secrets: a job names the ones it gets (``secrets``)."""


@secret.command("set")
@click.argument("tenant")
@click.argument("name")
def set_secret(tenant: str, name: str) -> None:
    """Store TENANT's secret NAME (or replace it); the value is read from stdin."""
    from tasks.secrets import checked_value

    _checked(tenant, name)
    try:
        store, s = _store()
        value = checked_value(_read_value(s.caps.secret_value_bytes), s.caps.secret_value_bytes)
        created = store.set(tenant, name, value)
    except AirlockError as exc:  # SecretError among them: the value is never quoted
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{tenant}: {name} {'stored' if created else 'replaced'}")


@secret.command("list")
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def list_secrets(tenant: str, as_json: bool) -> None:
    """TENANT's secrets, by name (never a value)."""
    _checked(tenant)
    try:
        store, _ = _store()
        found = store.listed(tenant)
    except AirlockError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([{"name": i.name, "updated_at": i.updated_at.isoformat(),
                                "key_id": i.key_id} for i in found], indent=2))
        return
    for info in found:
        stale = "" if info.key_id == store.box.key_id else "  (sealed with another key)"
        click.echo(f"{info.name}  {info.updated_at:%Y-%m-%d %H:%M:%S %Z}{stale}")


@secret.command("delete")
@click.argument("tenant")
@click.argument("name")
def delete_secret(tenant: str, name: str) -> None:
    """Delete TENANT's secret NAME; exits 1 when there is none."""
    _checked(tenant, name)
    try:
        store, _ = _store()
        gone = store.delete(tenant, name)
    except AirlockError as exc:
        raise click.ClickException(str(exc)) from exc
    if not gone:
        raise click.ClickException(f"{tenant} has no secret {name}")
    click.echo(f"{tenant}: {name} deleted")
