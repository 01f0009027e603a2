"""docker-compose.yml: valid for docker-compose, secrets only from .env, services ordered by
health, and its worker and Flower running a real job on this machine."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from airlock.client import Airlock
from config.settings import Settings
from tasks.keys import Scope
from tasks.store import make_engine
from tasks.tenancy import TenantStore
from tests.ops.conftest import free_port
from tests.ops.stack import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    ROOT,
    compose,
    empty_database,
    load,
    local_stack,
)
from workers.networks import BACKEND, EGRESS, WORKSPACE

SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRLOCK_FLOWER_PASSWORD",
           "AIRLOCK_API_KEY_SECRET")


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compose file beside a copy of .env.example as its .env, as an operator sets it up."""
    folder = tmp_path_factory.mktemp("compose")
    shutil.copy(COMPOSE_FILE, folder / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, folder / ".env")
    return folder


def _config(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return compose("config", *args, project="airlock", files=[folder / "docker-compose.yml"],
                   env=env, cwd=folder, timeout=60)


@pytest.fixture(scope="module")
def resolved(project_dir: Path) -> dict[str, Any]:
    done = _config(project_dir)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = yaml.safe_load(done.stdout)
    return data


def test_docker_compose_accepts_the_file(project_dir: Path) -> None:
    done = _config(project_dir, "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_secrets_come_from_an_env_file_that_is_never_committed(tmp_path: Path) -> None:
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    done = _config(tmp_path, "-q")  # no .env: refused, naming what is missing
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env must be in .gitignore"
    example = ENV_EXAMPLE.read_text()
    assert all(f"{name}=" in example for name in SECRETS)
    for line in COMPOSE_FILE.read_text().splitlines():  # every password is a ${VARIABLE}
        found = re.match(r"\s*[A-Z_]*PASSWORD:\s*(.*)", line)
        if found:
            assert found.group(1).startswith("${"), line


def test_services_start_in_order_of_health(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == {"postgres", "redis", "migrate", "worker", "api", "flower", "proxy"}
    for name, service in services.items():
        if name != "migrate":  # a one-shot: its exit status is its health
            assert service["healthcheck"]["test"], name
    assert services["worker"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
        "proxy": {"condition": "service_healthy"},
    }
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["airlock", "db", "upgrade"]
    assert services["flower"]["depends_on"]["worker"] == {"condition": "service_healthy"}
    assert services["api"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"}
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])


def test_images_pulled_and_built(resolved: dict[str, Any], project_dir: Path) -> None:
    services = resolved["services"]
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["proxy"]["image"] == "airlock/proxy:latest"
    for name in ("migrate", "worker", "api", "flower"):
        assert services[name]["image"] == "airlock/worker:latest"
    build = services["worker"]["build"]
    assert Path(build["context"]) == project_dir  # the repository root, beside the file
    assert build["dockerfile"] == "images/worker/Dockerfile"
    dockerfile = (ROOT / "images/worker/Dockerfile").read_text()
    assert "ARG BASE=airlock/debian-base:bookworm\nFROM ${BASE}" in dockerfile
    for image in ("proxy", "sandbox"):
        assert (ROOT / "images" / image / "Dockerfile").exists()


def test_redis_keeps_an_append_only_file_behind_a_password(resolved: dict[str, Any]) -> None:
    command = " ".join(resolved["services"]["redis"]["command"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--requirepass",
                 "--maxmemory-policy volatile-lru"):  # bounded, and the queue never evicted
        assert flag in command
    # `config` prints "$$" as "$" or keeps it, by docker-compose's version
    assert re.search(r'--maxmemory "\$?\$\{REDIS_MAXMEMORY:-1gb\}"', command), command


def test_the_worker_is_not_privileged_and_flower_is_local_only(resolved: dict[str, Any]) -> None:
    worker, flower = resolved["services"]["worker"], resolved["services"]["flower"]
    assert not worker.get("privileged")
    assert worker["cap_add"] == ["SYS_ADMIN"]  # btrfs quota ioctls, explained in the file
    mounts = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    assert mounts == {"/var/run/docker.sock": "/var/run/docker.sock",
                      "/sys/fs/cgroup": "/sys/fs/cgroup",
                      "/var/lib/airlock/volumes": "/var/lib/airlock/volumes",
                      "/run/airlock/io": "/run/airlock/io",
                      "/run/airlock/slots": "/run/airlock/slots",
                      "/var/lib/airlock/spool": "/var/lib/airlock/spool",
                      "/usr/local/libexec/airlock": "/usr/local/libexec/airlock",
                      "/sys/kernel/security": "/sys/kernel/security"}
    assert "/sys/kernel/security:/sys/kernel/security:ro" in worker["volumes"]  # AppArmor, read
    assert "/usr/local/libexec/airlock:/usr/local/libexec/airlock:ro" in worker["volumes"]
    assert worker["networks"] == {"backend": None} and "ports" not in worker
    api = resolved["services"]["api"]
    for service in (flower, api, resolved["services"]["migrate"]):
        assert service["user"] == "65534:65534" and service["cap_drop"] == ["ALL"]
        assert service["read_only"] is True
        assert "volumes" not in service  # no engine socket for anything but the worker
    for service in (flower, api):
        ports = service["ports"]
        assert len(ports) == 1 and str(ports[0]).startswith("127.0.0.1:")
        assert service["networks"] == {"backend": None}


def test_networks_are_the_ones_workers_networks_plans(resolved: dict[str, Any]) -> None:
    networks = {n["name"]: n for n in resolved["networks"].values()}
    for plan in (BACKEND, WORKSPACE, EGRESS):
        network = networks[plan.name]
        ipam = network["ipam"]["config"][0]
        assert ipam["subnet"] == plan.subnet and ipam["gateway"] == plan.gateway
        assert ipam.get("ip_range") == plan.ip_range
        assert bool(network.get("internal")) == plan.internal
        assert network["driver_opts"] == plan.options()
    proxy = resolved["services"]["proxy"]
    assert proxy["networks"]["workspace"]["ipv4_address"] == "172.29.0.2"
    assert set(proxy["networks"]) == {"workspace", "egress"}


# --- the worker and Flower from this file, running a job ----------------------------------

def _status(project: str) -> dict[str, str]:
    client = docker.APIClient(version="auto")
    try:
        found = client.containers(all=True, filters={
            "label": f"com.docker.compose.project={project}"})
        return {c["Labels"]["com.docker.compose.service"]: c["Status"] for c in found}
    finally:
        client.close()


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str, dict[str, str]]]:
    with ExitStack() as stack_resources:
        yield from _stack(settings, tmp_path, stack_resources)


def _stack(settings: Settings, tmp_path: Path,
           stack_resources: ExitStack) -> Iterator[tuple[Settings, str, dict[str, str]]]:
    tag = uuid.uuid4().hex[:8]
    database = stack_resources.enter_context(empty_database())  # the migrate service's to fill
    s = settings.but(**{"database_url": database, "fleet": f"compose-{tag}",
                                    "queue": f"compose-{tag}"})
    env = {
        "AIRLOCK_DATABASE_URL": s.database_url, "AIRLOCK_BROKER_URL": s.broker_url,
        "AIRLOCK_REDIS_URL": s.redis_url, "AIRLOCK_FLEET": s.fleet, "AIRLOCK_QUEUE": s.queue,
        "AIRLOCK_HOSTNAME": f"compose-{tag}", "AIRLOCK_CONCURRENCY": "1",
        "AIRLOCK_STORAGE": s.storage, "AIRLOCK_LOG_FORMAT": "json",
        "AIRLOCK_REAPER_INTERVAL_S": "2",
        # Host network: loopback addresses and free ports instead of the container's own.
        "AIRLOCK_METRICS_ADDRESS": "127.0.0.1", "AIRLOCK_METRICS_PORT": str(free_port()),
        "AIRLOCK_FLOWER_ADDRESS": "127.0.0.1", "AIRLOCK_FLOWER_PORT": str(free_port()),
        "AIRLOCK_FLOWER_USER": "ops", "AIRLOCK_FLOWER_PASSWORD": "compose-test-password",
        "AIRLOCK_API_HOST": "127.0.0.1", "AIRLOCK_API_PORT": str(free_port()),
        "AIRLOCK_API_KEY_SECRET": secrets.token_hex(32),
    }
    data = local_stack(load(), env)
    for service in data["services"].values():
        if "healthcheck" in service:
            service["healthcheck"]["interval"] = "1s"  # only sooner: the same test
    file = tmp_path / "docker-compose.test.yml"
    file.write_text(yaml.safe_dump(data))
    project = f"airlock-test-{tag}"
    up = compose("up", "-d", project=project, files=[file], env=dict(os.environ))
    try:
        assert up.returncode == 0, up.stderr
        yield s, project, env
    finally:
        logs = compose("logs", "--no-color", project=project, files=[file], env=dict(os.environ))
        (ROOT / "artifacts").mkdir(exist_ok=True)
        (ROOT / "artifacts" / f"compose-{tag}.log").write_text(logs.stdout + logs.stderr)
        down = compose("down", "--volumes", "--timeout", "30", project=project, files=[file],
                       env=dict(os.environ))
        assert down.returncode == 0, down.stderr
        assert _status(project) == {}


@pytest.mark.integration
def test_compose_worker_and_flower_run_a_job(
        stack: tuple[Settings, str, dict[str, str]]) -> None:
    s, project, env = stack
    deadline = time.monotonic() + 90
    while True:
        status = _status(project)
        running = {name: state for name, state in status.items() if name != "migrate"}
        if all("(healthy)" in state for state in running.values()):
            break
        assert time.monotonic() < deadline and "Exited" not in str(running), status
        time.sleep(0.5)
    assert set(status) == {"migrate", "worker", "api", "flower"}
    assert status["migrate"].startswith("Exited (0)"), status  # `airlock db upgrade`, done

    client = Airlock(s)
    try:
        record = client.submit(code="print(6*7)").wait(60)
    finally:
        client.close()
    assert record.verdict == "ok" and record.stdout == "42\n", record.summary()
    assert record.provenance is not None
    assert record.provenance["host"] == env["AIRLOCK_HOSTNAME"]  # the container's worker ran it
    assert record.worker_host == env["AIRLOCK_HOSTNAME"]

    # Counted just after the result is stored (which is what wait() sees): poll briefly.
    deadline = time.monotonic() + 10
    while 'airlock_jobs_total{verdict="ok"} 1.0' not in (metrics := urllib.request.urlopen(
            f"http://127.0.0.1:{env['AIRLOCK_METRICS_PORT']}/metrics", timeout=5).read().decode()):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.2)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{env['AIRLOCK_FLOWER_PORT']}/", timeout=5)
    refused.value.close()
    assert refused.value.code == 401

    # The API service: a tenant's key (made with the same secret), a job over HTTP.
    tenants = TenantStore(make_engine(s.database_url))
    try:
        tenants.create("compose")
        key = tenants.create_key("compose", Scope.SUBMIT, env["AIRLOCK_API_KEY_SECRET"].encode())
    finally:
        tenants.engine.dispose()
    over_http = Airlock(url=f"http://127.0.0.1:{env['AIRLOCK_API_PORT']}", api_key=key.token)
    try:
        record = over_http.submit(code="print(6*7)").wait(60)
    finally:
        over_http.close()
    assert (record.verdict, record.stdout, record.tenant) == ("ok", "42\n", "compose")
