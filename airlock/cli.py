"""The ``airlock`` command: one group, its commands gathered from airlock/commands/."""

from __future__ import annotations

import sys

import click

from airlock.cli_kit import AirlockGroup, settings
from airlock.commands import files, fleet, jobs, ops, secrets, shares, tenants


@click.group(cls=AirlockGroup)
def main() -> None:
    """Airlock runs untrusted code in fresh, hardened, throwaway containers."""
    from base.logs import setup_logging

    try:
        setup_logging(settings().log_format)
    except Exception as exc:
        click.echo(f"airlock: settings: {exc}", err=True)
        sys.exit(2)


for command in (jobs.run, jobs.result, jobs.logs, jobs.cancel, jobs.submit, files.files,
                ops.worker, ops.flower, ops.doctor, ops.dead_letters, ops.db, tenants.tenant,
                tenants.key, tenants.api, fleet.fleet, shares.usage, secrets.secret):
    main.add_command(command)
for command in (shares.set_quota, shares.show):
    tenants.tenant.add_command(command)


if __name__ == "__main__":
    main()
