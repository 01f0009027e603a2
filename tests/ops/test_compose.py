"""docker-compose.yml: valid for docker-compose, secrets only from .env, services ordered by
health, and its worker and Flower running a real job on this machine."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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
from workers.networks import BACKEND, EGRESS, WORKSPACE, ensure_networks

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
                      "/sys/kernel/security": "/sys/kernel/security",
                      "/run/airlock/egress": "/run/airlock/egress"}
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


def _wait_healthy(project: str, within_s: float) -> dict[str, str]:
    """Every service but the one-shot migration healthy; their states."""
    deadline = time.monotonic() + within_s
    while True:
        status = _status(project)
        running = {name: state for name, state in status.items() if name != "migrate"}
        if running and all("(healthy)" in state for state in running.values()):
            return status
        assert time.monotonic() < deadline and "Exited" not in str(running), status
        time.sleep(0.5)


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str, dict[str, str]]]:
    with ExitStack() as stack_resources:
        yield from _stack(settings, tmp_path, stack_resources)


# The images under test: a branch's own tags when it builds them (else the file's).
WORKER_IMAGE = os.environ.get("AIRLOCK_TEST_WORKER_IMAGE")
PROXY_IMAGE = os.environ.get("AIRLOCK_TEST_PROXY_IMAGE")
Edit = Callable[[dict[str, Any], str], None]


def _stack(settings: Settings, tmp_path: Path, stack_resources: ExitStack,
           extra_env: dict[str, str] | None = None,
           edit: Edit | None = None) -> Iterator[tuple[Settings, str, dict[str, str]]]:
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
    } | (extra_env or {})
    data = local_stack(load(), env)
    for service in data["services"].values():
        service["image"] = WORKER_IMAGE or service["image"]
    if edit is not None:
        edit(data, tag)
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
    status = _wait_healthy(project, 90)
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


# --- egress under compose: the file's proxy service, the worker told it is external --------

ENDPOINT = ("api.compose-tenant.standin.test", "198.51.100.41")  # only the proxy resolves it
FIREWALL = ROOT / "scripts" / "firewall"


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def _endpoint(tag: str, hits: Path) -> Iterator[None]:
    """A tenant's endpoint stood in for: an HTTP server on ENDPOINT's address in a network
    namespace of this test's, behind a veth pair routed from the host (never a real host)."""
    ns, host_if, peer = f"alcmp-{tag[:6]}", f"alc{tag[:6]}h", f"alc{tag[:6]}n"
    ready = hits.with_suffix(".ready")
    steps = [["ip", "netns", "add", ns],
             ["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer],
             ["ip", "link", "set", peer, "netns", ns],
             ["ip", "addr", "add", "198.18.1.1/30", "dev", host_if], ["ip", "link", "set", host_if, "up"],
             ["ip", "netns", "exec", ns, "ip", "addr", "add", "198.18.1.2/30", "dev", peer],
             ["ip", "netns", "exec", ns, "ip", "link", "set", peer, "up"],
             ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
             ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{ENDPOINT[1]}/32", "dev", "lo"],
             ["ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", "198.18.1.1"],
             ["ip", "route", "replace", f"{ENDPOINT[1]}/32", "via", "198.18.1.2"]]
    proc = None
    try:
        for step in steps:
            done = _sh(*step)
            assert done.returncode == 0, (step, done.stderr)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable,
             str(ROOT / "tests" / "network" / "endpoint_standin.py"), "--bind", ENDPOINT[1],
             "--name", ENDPOINT[0], "--hits", str(hits), "--ready", str(ready)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the endpoint did not start"
            time.sleep(0.05)
        yield
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        _sh("ip", "route", "del", f"{ENDPOINT[1]}/32", "via", "198.18.1.2")
        _sh("ip", "netns", "del", ns)  # its end of the veth pair, and so the pair, go with it


@contextmanager
def _host_firewall() -> Iterator[None]:
    """The documented step on the host before docker-compose up: apply.sh, then verify.sh
    (removed afterwards unless it was there before)."""
    was_applied = _sh("bash", str(FIREWALL / "verify.sh")).returncode == 0
    try:
        applied = _sh("bash", str(FIREWALL / "apply.sh"))
        assert applied.returncode == 0, applied.stderr
        verified = _sh("bash", str(FIREWALL / "verify.sh"))
        assert verified.returncode == 0, verified.stderr
        yield
    finally:
        if not was_applied:
            _sh("bash", str(FIREWALL / "remove.sh"))


def _with_proxy(registry: str) -> Edit:
    """The file's proxy service (its networks made beforehand, as the worker's plans say),
    reading ``registry``; the worker writing it at the same path."""
    def edit(data: dict[str, Any], tag: str) -> None:
        proxy = copy.deepcopy(load()["services"]["proxy"])
        proxy["image"] = PROXY_IMAGE or proxy["image"]
        proxy["restart"] = "no"
        proxy["extra_hosts"] = [f"{ENDPOINT[0]}:{ENDPOINT[1]}"]
        proxy["environment"]["AIRLOCK_EGRESS_ALLOWLIST"] = "pypi.org"
        proxy["volumes"] = [v.replace("/run/airlock/egress:", f"{registry}:")
                            for v in proxy["volumes"]]
        proxy["healthcheck"]["interval"] = "1s"
        data["services"]["proxy"] = proxy
        worker = data["services"]["worker"]
        worker["volumes"] = [v.replace("/run/airlock/egress:/run/airlock/egress",
                                       f"{registry}:{registry}") for v in worker["volumes"]]
        worker["depends_on"]["proxy"] = {"condition": "service_healthy"}
        data["networks"] = {"workspace": {"name": WORKSPACE.name, "external": True},
                            "egress": {"name": EGRESS.name, "external": True}}
        data["volumes"] = {"egress-ca": {"name": "airlock-egress-ca", "external": True}}
    return edit


@pytest.fixture
def egress_stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str, dict[str, str]]]:
    registry = f"/run/airlock/egress-compose-{uuid.uuid4().hex[:8]}"
    api = docker.APIClient(version="auto")
    if api.containers(all=True, filters={"name": "^/airlock-egress-proxy$"}):
        pytest.fail("an egress proxy runs on this host already (another session's network"
                    " tests?): the compose proxy takes its name")
    ensure_networks(api)
    api.create_volume("airlock-egress-ca")
    api.close()
    env = {"AIRLOCK_EGRESS_ENABLED": "true", "AIRLOCK_EGRESS_ALLOWLIST": "pypi.org",
           "AIRLOCK_EGRESS_REGISTRY_DIR": registry, "AIRLOCK_EGRESS_REFRESH_S": "1"}
    with ExitStack() as resources:
        resources.enter_context(_host_firewall())
        resources.enter_context(_endpoint(uuid.uuid4().hex, tmp_path / "endpoint.hits"))
        resources.callback(shutil.rmtree, registry, ignore_errors=True)
        yield from _stack(settings, tmp_path, resources, env, _with_proxy(registry))


REQUESTS = r"""
import json, urllib.error, urllib.request
out = {}
for url in ARGS:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out[url] = [r.status, r.read(200).decode()]
    except urllib.error.HTTPError as exc:
        out[url] = [exc.code, exc.read(600).decode("utf-8", "replace")]
print(json.dumps(out))
"""


@pytest.mark.integration
@pytest.mark.network
def test_compose_runs_egress_jobs_through_its_proxy(
        egress_stack: tuple[Settings, str, dict[str, str]], tmp_path: Path) -> None:
    s, project, _ = egress_stack
    assert "proxy" in _wait_healthy(project, 120)
    tenants = TenantStore(make_engine(s.database_url))
    try:
        tenants.create("compose-egress")
        tenants.set_egress("compose-egress", [ENDPOINT[0]])
    finally:
        tenants.engine.dispose()
    own, other = f"http://{ENDPOINT[0]}/", "http://api.other-tenant.standin.test/"
    client = Airlock(s, tenant="compose-egress")
    try:
        record = client.submit(code=f"ARGS = {[own, other]!r}\n{REQUESTS}", network="egress",
                               limits={"timeout_s": 60}).wait(120)
    finally:
        client.close()
    assert record.verdict == "ok", record.summary()
    got = json.loads(record.stdout.strip().splitlines()[-1])
    assert got[own][0] == 200 and f"endpoint {ENDPOINT[0]}" in got[own][1], got
    assert got[other][0] == 403, got
    assert ("api.other-tenant.standin.test is not on the egress allowlist of tenant"
            " compose-egress") in got[other][1]
    assert (tmp_path / "endpoint.hits").read_text() == "1"
