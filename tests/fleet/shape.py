"""compose/host.yml's worker as a process on this machine: the settings the host shape gives
its worker, resolved by docker-compose itself, pointed at a test's control plane.

Why processes and not the worker container on each engine: a worker container drives the
engine whose socket it is given, so host 2's would need the worker image copied into the
second engine (hundreds of MB, about a minute on 2 cores) and a socket mount per engine; the
code that runs is the same, and tests/ops/test_compose.py already runs the image as compose
defines it. What the host shape decides (its environment) is taken from the file here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from config.settings import Settings
from tests.services import ROOT

HOST_FILE = ROOT / "compose" / "host.yml"
CONTROL_PLANE_FILE = ROOT / "compose" / "control-plane.yml"
# Container paths of the shape that mean something else on this machine's own filesystem.
CONTAINER_ONLY = ("AIRLOCK_METRICS_DIR", "AIRLOCK_HEALTH_FILE", "AIRLOCK_METRICS_ADDRESS",
                  "AIRLOCK_METRICS_PORT")


def resolved(file: Path, env_file: dict[str, str], folder: Path) -> dict[str, Any]:
    """``docker-compose config`` of ``file`` with ``env_file`` as its .env."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
    (folder / file.name).write_text(file.read_text())
    done = subprocess.run(["docker-compose", "-f", file.name, "config"], cwd=folder,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    if done.returncode != 0:
        raise AssertionError(f"docker-compose config {file.name}: {done.stderr}")
    data: dict[str, Any] = yaml.safe_load(done.stdout)
    return data


def host_env(control_plane: Settings, folder: Path, **overrides: str) -> dict[str, str]:
    """The host shape's worker environment for a worker of ``control_plane``'s fleet, with the
    container-only paths left out and ``overrides`` (its name, its engine, ...) applied."""
    data = resolved(HOST_FILE, {
        "AIRLOCK_DATABASE_URL": control_plane.database_url,
        "AIRLOCK_BROKER_URL": control_plane.broker_url,
        "AIRLOCK_REDIS_URL": control_plane.redis_url,
        "AIRLOCK_FLEET": control_plane.fleet,
        "AIRLOCK_QUEUE": control_plane.queue,
    }, folder)
    environment = {k: str(v) for k, v in data["services"]["worker"]["environment"].items()}
    return {k: v for k, v in environment.items() if k not in CONTAINER_ONLY} | overrides
