"""docker-compose.yml's worker and Flower, brought up against this machine's services.

No registry is reachable here, so PostgreSQL, Redis and the proxy images cannot be pulled: the
test keeps the file's definitions of the services Airlock builds (image, command, mounts,
capabilities, read-only root, tmpfs, healthchecks) and changes only what ties them to the
services it cannot run: the network (the host's, to reach 127.0.0.1), the dependencies, and the
environment (this session's database, queue and fleet).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
BUILT_HERE = ("worker", "flower")


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
    """The file's worker and Flower only, on the host network, with ``env`` added."""
    services = {}
    for name in BUILT_HERE:
        service = copy.deepcopy(data["services"][name])
        for key in ("networks", "depends_on", "ports", "hostname", "build"):
            service.pop(key, None)
        service["network_mode"] = "host"
        service["restart"] = "no"
        environment = {k: v for k, v in service["environment"].items() if "${" not in str(v)}
        service["environment"] = environment | env
        services[name] = service
    return {"services": services}
