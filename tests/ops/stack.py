"""docker-compose.yml's worker and Flower, brought up against this machine's services.

No registry is reachable here, so PostgreSQL, Redis and the proxy images cannot be pulled: the
test keeps the file's definitions of the services Airlock builds (image, command, mounts,
capabilities, read-only root, tmpfs, healthchecks) and changes only what ties them to the
services it cannot run: the network (the host's, to reach 127.0.0.1), the dependencies, and the
environment (a database of its own, a queue and a fleet).
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from tests.services import ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
BUILT_HERE = ("migrate", "worker", "api", "flower")


def compose(*args: str, project: str, files: list[Path], env: dict[str, str],
            timeout: float = 120, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    argv = ["docker-compose", "--project-name", project]
    for f in files:
        argv += ["-f", str(f)]
    return subprocess.run([*argv, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def local_stack(data: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The file's migration, worker and Flower only, on the host network, with ``env`` added."""
    services = {}
    for name in BUILT_HERE:
        service = copy.deepcopy(data["services"][name])
        for key in ("networks", "ports", "hostname", "build"):
            service.pop(key, None)
        # Start order by health among these services is kept (worker after migrate, Flower
        # after a healthy worker); PostgreSQL, Redis and the proxy are this machine's own.
        service["depends_on"] = {dep: condition for dep, condition in
                                 service.get("depends_on", {}).items() if dep in BUILT_HERE}
        service["network_mode"] = "host"
        service["restart"] = "no"
        environment = {k: v for k, v in service["environment"].items() if "${" not in str(v)}
        service["environment"] = environment | env
        services[name] = service
    return {"services": services}


@contextmanager
def empty_database() -> Iterator[str]:
    """A database without any schema (for the migration to create, or doctor to flag)."""
    name = f"airlock_empty_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
