"""``airlock flower``: Flower for Airlock's Celery app, with basic auth always on.

Flower shows what the task messages carry: the task name ``airlock.run_job`` and the
``argsrepr`` the client wrote ("('<job id>') python: print(6*7)", code shortened). Job
environment, stdin and files never travel in a message (only the job id does), so they
cannot show up here. Credentials reach Flower through its environment (FLOWER_BASIC_AUTH),
never the command line, where every local user could read them in ``ps``.
"""

from __future__ import annotations

import logging
import os

from base.errors import AirlockError
from config.settings import Settings

COLUMNS = "name,state,args,worker,received,runtime"  # the job id and code are in args


class FlowerRefused(AirlockError):
    """Flower was not started: its settings are unsafe."""


def basic_auth(s: Settings) -> str:
    """``user:password`` for Flower; refuses to run without a password."""
    password = s.flower.password.get_secret_value() if s.flower.password else ""
    if not password:
        raise FlowerRefused("no password: set AIRLOCK_FLOWER_PASSWORD (Flower never runs without auth)")
    if ":" in s.flower.user or "," in s.flower.user or not s.flower.user:
        raise FlowerRefused("AIRLOCK_FLOWER_USER must be non-empty without ':' or ','")
    if "," in password:
        raise FlowerRefused("AIRLOCK_FLOWER_PASSWORD must not contain ',' (Flower splits on it)")
    return f"{s.flower.user}:{password}"


def flower_argv(s: Settings, port: int | None = None, address: str | None = None) -> list[str]:
    return [
        "flower",
        f"--address={address or s.flower.address}",
        f"--port={port or s.flower.port}",
        f"--tasks_columns={COLUMNS}",
        "--read_only",  # no revoke, shutdown or pool changes from the web page
        "--purge_offline_workers=3600",
    ]


def start_flower(s: Settings, port: int | None = None, address: str | None = None) -> None:
    """Serve Flower until stopped (SIGTERM or Ctrl-C)."""
    from tasks.app import app, configure

    logging.getLogger().setLevel(logging.INFO)  # Flower's own lines (where it listens) are info
    os.environ["FLOWER_BASIC_AUTH"] = basic_auth(s)
    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    configure(s)
    app.start(flower_argv(s, port, address))
