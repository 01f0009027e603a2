"""Fixtures of the network suite: the host's isolation, set up by the session and undone after.

``network_host`` makes what the tests need, so ``pytest`` alone works (CI sets nothing up for
it): the Docker networks, the firewall rules (scripts/firewall/apply.sh), the stand-ins
(scripts/standins.sh: fake metadata services, private-range hosts and host-side listeners,
each counting its contacts) and the egress proxy, started the way a worker starts it
(tasks/egress.prepare_host) for ``egress_settings``. At the end it removes the stand-ins, and
the rules and the proxy unless they were there before. ``egress_worker`` is a real
``airlock worker`` with egress enabled, on a fleet and queue of its own.

The rules are host-wide: never run this suite beside another session's network tests. The
fixtures are the package's, not the session's: the proxy is gone before a later package's
tests (tests/ops/test_compose.py's proxy service takes its name).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from config.settings import Settings
from tasks import egress
from tests.services import ROOT, WorkerProcess

STANDINS = ROOT / "scripts" / "standins.sh"
FIREWALL = ROOT / "scripts" / "firewall"
HITS = Path("/run/airlock-standins/hits")
PROXY_NAME = "airlock-egress-proxy"
TENANT_ENDPOINT = "bedrock-runtime.us-east-1.amazonaws.com"  # allowlisted, never contacted
# The "internet" stand-in (scripts/standins.sh): where the proxy resolves TENANT_ENDPOINT, so
# a contact is counted there instead of a lookup or a packet reaching the real name.
INTERNET_ADDRESS = "198.51.100.10"
# The stand-in of the Messages API (messages_standin.py): a tenant's endpoint that only the
# proxy resolves (egress.proxy_hosts), at a TEST-NET-2 address in the stand-ins' namespace.
MESSAGES_API = "messages-api.standin.test"
MESSAGES_API_ADDRESS = "198.51.100.20"
# The fleet's allowlist without api.anthropic.com: nothing here may reach the real API.
ALLOWLIST = ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org")
# The PyPI stand-in (pypi_standin.py): every name of ALLOWLIST resolves, for the proxy alone,
# to its TEST-NET-2 address in the stand-ins' namespace, and the proxy trusts only the test
# session's CA upstream (PYPI_TLS), so no request can reach the real registries: while the
# stand-in is down, a request fails (nothing listens there; no lookup of the real name).
PYPI_ADDRESS = "198.51.100.40"
PYPI_TLS = Path("/run/airlock-pypi-standin")  # the test CA, the stand-in's certificate and key
PYPI_PACKAGE, PYPI_VERSION = "airlock_probe_pkg", "1.0.3"
# Tenants' own endpoints (per-tenant egress): names only the proxy resolves, to stand-ins at
# TEST-NET-2 addresses in the stand-ins' namespace (``tenant_endpoints``).
TENANT_HOSTS = {"a": ("api.tenant-a.standin.test", "198.51.100.31"),
                "b": ("api.tenant-b.standin.test", "198.51.100.32"),
                "c": ("extra.tenant-a.standin.test", "198.51.100.33")}
# The proxy image under test: AIRLOCK_TEST_PROXY_IMAGE when a branch builds its own tag.
PROXY_IMAGE = os.environ.get("AIRLOCK_TEST_PROXY_IMAGE")
RunEgress = Callable[..., JobRecord]


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@dataclass(frozen=True)
class Standins:
    """The stand-ins' targets ("name", address, tcp ports, udp ports) and their hit counts."""

    targets: tuple[tuple[str, str, str, str], ...]

    def hits(self) -> dict[str, int]:
        time.sleep(0.3)  # a listener counts just after accepting
        return {f.name: int(f.read_text() or 0) for f in HITS.iterdir()
                if not f.name.endswith(".tmp")}

    def reset(self) -> None:
        assert sh(str(STANDINS), "reset").returncode == 0

    def named(self, name: str) -> str:
        return next(addr for n, addr, *_ in self.targets if n == name)

    def in_namespace(self) -> list[tuple[str, str]]:
        """Fake metadata services, private-range hosts, the "internet" and the resolver."""
        return [(n, addr) for n, addr, *_ in self.targets if not n.startswith("host@")]

    def on_host(self) -> list[tuple[str, str, int]]:
        """(name, host address, port): listeners on the host's own addresses."""
        return [(n, addr, int(tcp)) for n, addr, tcp, _ in self.targets if n.startswith("host@")]


@dataclass(frozen=True)
class StandinTls:
    """A CA made for this test session, and a certificate it signed for the stand-in."""

    ca: Path
    cert: Path
    key: Path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A stand-in's log: one JSON object a line (none before it logged anything)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def proxy_log(since: float) -> list[list[str]]:
    """The egress proxy's access log lines since ``since``, split: time, elapsed, client,
    code/status, bytes, method, URL, user, hierarchy/peer, type (Squid's format)."""
    time.sleep(1.0)  # Squid logs a request when it is done
    api = docker.APIClient(version="auto")
    try:
        log = api.logs(PROXY_NAME, stdout=True, stderr=False, since=int(since))
    finally:
        api.close()
    lines = [line.split() for line in log.decode("utf-8", "replace").splitlines()]
    return [f for f in lines if len(f) > 8 and f[0].replace(".", "").isdigit()
            and float(f[0]) >= since]


@dataclass(frozen=True)
class PyPI:
    """The PyPI stand-in: the package it serves, and the requests it answered."""

    package: str
    version: str
    log: Path

    def requests(self) -> list[dict[str, Any]]:
        return read_jsonl(self.log)

    def reset(self) -> None:
        self.log.write_text("")


@dataclass(frozen=True)
class NetworkHost:
    standins: Standins
    proxy_id: str
    pypi: PyPI


def make_tls(folder: Path, names: tuple[str, ...]) -> StandinTls:
    """A fresh CA (valid a day) and a server certificate for ``names``, in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Airlock network tests CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    tls = StandinTls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.touch(mode=0o600)
    tls.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    tls.ca.chmod(0o644)  # the proxy reads it as its user (bound read-only)
    return tls


@pytest.fixture(scope="package")
def pypi_tls() -> StandinTls:
    """The PyPI stand-in's certificate (the allowlisted registries' names), from a test CA
    that the proxy trusts upstream (``egress_settings``)."""
    return make_tls(PYPI_TLS, ALLOWLIST)


@pytest.fixture(scope="package")
def egress_settings(settings: Settings, pypi_tls: StandinTls) -> Settings:
    return settings.but(**{
        "fleet": f"{settings.fleet}-net", "queue": f"{settings.queue}-net",
        "egress_enabled": True, "egress_allowlist": ALLOWLIST,
        "egress_tenant_endpoints": (TENANT_ENDPOINT, MESSAGES_API),
        "proxy_hosts": {MESSAGES_API: MESSAGES_API_ADDRESS, TENANT_ENDPOINT: INTERNET_ADDRESS,
                        **dict.fromkeys(ALLOWLIST, PYPI_ADDRESS),
                        **dict(TENANT_HOSTS.values())},
        "proxy_upstream_ca": str(pypi_tls.ca),
        "egress_refresh_s": 1.0,
        **({"proxy_image": PROXY_IMAGE} if PROXY_IMAGE else {}),
    })


@pytest.fixture(scope="package")
def network_host(egress_settings: Settings, pypi_tls: StandinTls,
                 artifacts: Path) -> Iterator[NetworkHost]:
    s = egress_settings
    api = docker.APIClient(version="auto")
    for image in (s.profiles[s.default_profile].image, s.egress.proxy_image):
        if not api.images(name=image):
            pytest.fail(f"{image} is missing: run scripts/build-images.sh")
    firewall_was_applied = sh(str(FIREWALL / "verify.sh")).returncode == 0
    proxy_existed = bool(api.containers(all=True, filters={"name": f"^/{PROXY_NAME}$"}))
    stack = ExitStack()
    try:
        applied = sh(str(FIREWALL / "apply.sh"))
        assert applied.returncode == 0, applied.stderr
        # The networks first: the stand-ins listen on the host's addresses as they are when
        # they start, the workspace bridge's gateway among them (on a fresh host no earlier
        # test may have made that bridge yet).
        proxy_id = egress.prepare_host(s, api)
        up = sh(str(STANDINS), "up")
        assert up.returncode == 0, up.stderr
        listed = sh(str(STANDINS), "list").stdout.splitlines()
        targets = tuple((a, b, c, d) for a, b, c, d in (line.split("\t") for line in listed))
        # The PyPI stand-in for as long as the proxy resolves the registries' names to it
        pypi = start_pypi(stack, pypi_tls, artifacts)
        yield NetworkHost(Standins(targets), proxy_id, pypi)
    finally:
        stack.close()
        if not proxy_existed:
            for found in api.containers(all=True, filters={"name": f"^/{PROXY_NAME}$"}):
                api.remove_container(found["Id"], force=True)
            shutil.rmtree(PYPI_TLS, ignore_errors=True)  # a proxy left running binds its CA
        sh(str(STANDINS), "down")
        if not firewall_was_applied:
            sh(str(FIREWALL / "remove.sh"))
        api.close()


@pytest.fixture(scope="package")
def standins(network_host: NetworkHost) -> Standins:
    return network_host.standins


def worker_env_for(s: Settings) -> dict[str, str]:
    """What ``egress_settings`` adds to a worker's environment (tests/services.worker_env)."""
    env = {"AIRLOCK_EGRESS_ENABLED": "true",
           "AIRLOCK_EGRESS_ALLOWLIST": ",".join(s.egress.allowlist),
           "AIRLOCK_EGRESS_TENANT_ENDPOINTS": ",".join(s.egress.tenant_endpoints),
           "AIRLOCK_PROXY_HOSTS": json.dumps(s.egress.proxy_hosts),
           "AIRLOCK_PROXY_IMAGE": s.egress.proxy_image,
           "AIRLOCK_EGRESS_REFRESH_S": str(s.egress.refresh_s)}
    if s.egress.proxy_upstream_ca:
        env["AIRLOCK_PROXY_UPSTREAM_CA"] = s.egress.proxy_upstream_ca
    return env


@pytest.fixture(scope="package")
def egress_worker(egress_settings: Settings, network_host: NetworkHost,
                  artifacts: Path) -> Iterator[WorkerProcess]:
    s = egress_settings
    proc = WorkerProcess(s, artifacts / f"worker-{s.fleet}.log", **worker_env_for(s)).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="package")
def egress_client(egress_settings: Settings) -> Iterator[Airlock]:
    c = Airlock(egress_settings)
    yield c
    c.close()


@pytest.fixture
def run_egress(egress_client: Airlock, egress_worker: WorkerProcess) -> RunEgress:
    """Submit a job to the egress worker through the public API (network "egress" unless
    told otherwise) and wait for its stored result."""

    def run(code: str, *, network: str = "egress", wait: float = 120.0,
            **fields: Any) -> JobRecord:
        spec: dict[str, Any] = {"code": code, "network": network, **fields}
        return egress_client.submit(spec).wait(wait)

    return run



@dataclass(frozen=True)
class MessagesApi:
    """The Messages API stand-in: its URL as jobs use it (through the proxy), and what it saw."""

    url: str
    log: Path

    def requests(self) -> list[dict[str, Any]]:
        return read_jsonl(self.log)


# What the stand-in's scripted turn 1 asks the agent's Bash tool to run: a greeting, then the
# inner sandbox's probe (tasks/inner_canary.py), whose file and arguments the job wrote.
AGENT_COMMAND = ("echo hello-from-bash; "
                 "python3 /workspace/.airlock-inner-probe.py /workspace/.airlock-inner-probe.json")


STANDIN_NS, STANDIN_STATE = "airlock-standin", Path("/run/airlock-standins")


@contextmanager
def standin_server(address: str, argv: list[str], name: str, err: Path) -> Iterator[None]:
    """A server in the stand-ins' namespace on ``address`` (added to its loopback and routed
    from the host, so the proxy reaches it), started with ``argv`` + ``--ready FILE`` and
    waited for; removed afterwards."""
    ready = STANDIN_STATE / f"{name}.ready"
    ready.unlink(missing_ok=True)
    assert sh("ip", "netns", "exec", STANDIN_NS, "ip", "addr", "add", f"{address}/32",
              "dev", "lo").returncode == 0
    assert sh("ip", "route", "replace", f"{address}/32", "via", "198.18.0.2",
              "dev", "alsb-h").returncode == 0
    with open(err, "wb") as errors:  # the child keeps its own fd
        proc = subprocess.Popen(["ip", "netns", "exec", STANDIN_NS, sys.executable, *argv,
                                 "--ready", str(ready)],
                                stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.05)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        sh("ip", "route", "del", f"{address}/32", "via", "198.18.0.2")
        sh("ip", "netns", "exec", STANDIN_NS, "ip", "addr", "del", f"{address}/32", "dev", "lo")


def start_pypi(stack: ExitStack, tls: StandinTls, artifacts: Path) -> PyPI:
    """The PyPI stand-in on port 443 of PYPI_ADDRESS, serving a wheel built here."""
    from tests.network.pypi_standin import build_wheel

    dist = PYPI_TLS / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    build_wheel(dist, PYPI_PACKAGE, PYPI_VERSION)
    pypi = PyPI(PYPI_PACKAGE, PYPI_VERSION, artifacts / "pypi-standin.jsonl")
    pypi.reset()
    argv = [str(Path(__file__).with_name("pypi_standin.py")), "--bind", PYPI_ADDRESS,
            "--cert", str(tls.cert), "--key", str(tls.key), "--dist", str(dist),
            "--log", str(pypi.log)]
    stack.enter_context(standin_server(PYPI_ADDRESS, argv, "pypi", artifacts / "pypi-standin.err"))
    return pypi


@pytest.fixture(scope="package")
def pypi(network_host: NetworkHost) -> PyPI:
    return network_host.pypi


@pytest.fixture(scope="package")
def messages_api(network_host: NetworkHost, artifacts: Path) -> Iterator[MessagesApi]:
    """The stand-in, listening on port 80 of its address in the stand-ins' namespace."""
    log = artifacts / "messages-standin.jsonl"
    log.unlink(missing_ok=True)
    argv = [str(Path(__file__).with_name("messages_standin.py")), "--bind", MESSAGES_API_ADDRESS,
            "--port", "80", "--log", str(log), "--command", AGENT_COMMAND]
    with standin_server(MESSAGES_API_ADDRESS, argv, "messages-api",
                        artifacts / "messages-standin.err"):
        yield MessagesApi(f"http://{MESSAGES_API}", log)


@dataclass(frozen=True)
class Endpoint:
    """A tenant's stand-in endpoint: its name (only the proxy resolves it) and its hits."""

    host: str
    hits_file: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}/"

    def hits(self) -> int:
        return int(self.hits_file.read_text() or 0)


@pytest.fixture(scope="package")
def tenant_endpoints(network_host: NetworkHost, artifacts: Path) -> Iterator[dict[str, Endpoint]]:
    """TENANT_HOSTS' stand-ins, by key ("a", "b", "c")."""
    script = str(Path(__file__).with_name("endpoint_standin.py"))
    with ExitStack() as stack:
        found = {}
        for key, (host, address) in TENANT_HOSTS.items():
            hits = STANDIN_STATE / f"endpoint-{key}.hits"
            stack.enter_context(standin_server(
                address, [script, "--bind", address, "--name", host, "--hits", str(hits)],
                f"endpoint-{key}", artifacts / f"endpoint-{key}.err"))
            found[key] = Endpoint(host, hits)
        yield found
