"""compose/: the two shapes of a fleet. Each is valid for docker-compose with its .env example,
takes its secrets only from .env, and holds only its side: the control plane no worker and no
engine socket, a Docker host no database or Redis; a host's worker is docker-compose.yml's
worker (same mounts, capability, read-only root), joined by URL and named after its host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.shape import CONTROL_PLANE_FILE, HOST_FILE, resolved
from tests.ops.stack import COMPOSE_FILE, ENV_EXAMPLE

EXAMPLES = {HOST_FILE: HOST_FILE.with_name("host.env.example"),
            CONTROL_PLANE_FILE: CONTROL_PLANE_FILE.with_name("control-plane.env.example")}


def example_env(file: Path) -> dict[str, str]:
    lines = EXAMPLES[file].read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))


@pytest.fixture(scope="module", params=[HOST_FILE, CONTROL_PLANE_FILE], ids=["host", "control"])
def shape(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, dict[str, Any]]:
    file: Path = request.param
    return file, resolved(file, example_env(file), tmp_path_factory.mktemp(file.stem))


def test_each_shape_is_valid_with_its_env_example(shape: tuple[Path, dict[str, Any]]) -> None:
    file, data = shape
    assert data["services"]
    used = set(re.findall(r"\$\{([A-Z_]+)", file.read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", EXAMPLES[file].read_text(), re.M))
    assert used <= listed, f"{file.name} reads variables its example does not list: {used - listed}"


def test_a_shape_without_its_secrets_is_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="AIRLOCK_DATABASE_URL"):
        resolved(HOST_FILE, {}, tmp_path)
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        resolved(CONTROL_PLANE_FILE, {}, tmp_path)
    for file in (HOST_FILE, CONTROL_PLANE_FILE):
        for line in file.read_text().splitlines():
            found = re.match(r"\s*[A-Z_]*(PASSWORD|_URL):\s*(.*)", line)
            if found:  # every secret, and every URL that carries one, is a ${VARIABLE}
                assert "${" in found.group(2), line


def test_each_shape_holds_only_its_side(shape: tuple[Path, dict[str, Any]]) -> None:
    file, data = shape
    services = set(data["services"])
    if file == HOST_FILE:
        assert services == {"worker", "proxy"}
    else:
        assert services == {"postgres", "redis", "migrate", "flower"}
        for service in data["services"].values():
            assert not any("docker.sock" in str(v) for v in service.get("volumes", []))


def test_a_hosts_worker_is_the_one_host_shapes_worker_joined_by_url(tmp_path: Path) -> None:
    env = example_env(HOST_FILE)
    ours = resolved(HOST_FILE, env, tmp_path / "host")["services"]["worker"]
    lines = ENV_EXAMPLE.read_text().splitlines()
    one_host = resolved(COMPOSE_FILE, dict(line.split("=", 1) for line in lines
                                           if re.match(r"^[A-Z_]+=", line)),
                        tmp_path / "one")["services"]["worker"]
    for key in ("image", "command", "cap_add", "security_opt", "read_only", "tmpfs", "init",
                "stop_grace_period", "healthcheck"):
        assert ours[key] == one_host[key], key
    assert sorted(ours["volumes"]) == sorted(one_host["volumes"])
    environment = ours["environment"]
    assert environment["AIRLOCK_WORKER_NAME_FROM"] == "engine"
    assert environment["AIRLOCK_DATABASE_URL"] == env["AIRLOCK_DATABASE_URL"]
    assert "hostname" not in ours  # named after the Docker host, through its engine
