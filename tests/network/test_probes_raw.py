"""A19-A22 probed from containers started with the raw Docker SDK on airlock-workspace.

Every target is a stand-in this machine owns (scripts/standins.sh): a missing block shows
up as a hit on our own listener, never as a packet to a real address. The allowlisted read
through the proxy, its point, goes to the PyPI stand-in (pypi_standin.py, conftest.py).
Containers get the stand-in resolver as their DNS upstream, so a forwarded lookup is
counted there instead of reaching the host's real resolver.

Needs root, the images airlock/sandbox and airlock/proxy (scripts/build-images.sh); the
session's fixtures (conftest.py) set up the rules, the stand-ins and the proxy.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from config.settings import Settings
from tests.network import probes
from tests.network.conftest import PYPI_ADDRESS, NetworkHost, PyPI, StandinTls
from workers.networks import EGRESS, PROXY_PORT, WORKSPACE, proxy_ca_bind, proxy_env
from workers.proxy_registry import Registry, new_credential

pytestmark = [pytest.mark.network, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "scripts" / "standins.sh"
HITS = Path("/run/airlock-standins/hits")
# A uid of the jobs' range (config/sections.py), as a job would run: never a host account's.
JOB_USER = "{0}:{0}".format(Settings().sandbox.job_uids[0] + Settings().sandbox.job_uids[1] - 2)
SANDBOX = "airlock/sandbox:latest"
PROXY_IP = "172.29.0.2"
REGISTRY = "/run/airlock/egress"  # egress_settings' (the default): the proxy reads it
RESOLVER = "10.99.0.53"  # the stand-in resolver (scripts/standins.sh "dns-resolver")
FAST_S = 5.0


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    dc = docker.from_env(version="auto")
    yield dc
    dc.close()


@pytest.fixture(scope="module")
def stack(network_host: NetworkHost, egress_settings: Settings) -> dict[str, Any]:
    """The session's networks, rules, stand-ins and proxy (tests/network/conftest.py)."""
    assert (egress_settings.egress.proxy_ip, egress_settings.egress.proxy_port) == (PROXY_IP, PROXY_PORT)
    return {"targets": [list(t) for t in network_host.standins.targets],
            "proxy": network_host.proxy_id}


@pytest.fixture(autouse=True)
def zero_hits(stack: dict[str, Any]) -> None:
    assert sh(str(STANDINS), "reset").returncode == 0


def hits() -> dict[str, int]:
    time.sleep(0.3)  # a listener counts just after accepting
    return {f.name: int(f.read_text()) for f in HITS.iterdir() if not f.name.endswith(".tmp")}


def run_job(docker_client: docker.DockerClient, code: str, *, network: str = WORKSPACE.name,
            timeout_s: float = 180) -> dict[str, Any]:
    """One hardened container runs ``code``; its last output line, parsed."""
    registry = Registry(REGISTRY)  # a credential as a job's, valid while this one runs
    cred = new_credential(str(uuid.uuid4()), 1, "default", time.time() + timeout_s + 60)
    registry.register(cred)
    container = docker_client.containers.create(
        SANDBOX, ["python3", "-c", code], user=JOB_USER, network=network,
        read_only=True, tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"},
        cap_drop=["ALL"], cap_add=["CHOWN", "SETUID", "SETGID"],
        security_opt=["no-new-privileges:true"], pids_limit=128,
        mem_limit="512m", memswap_limit="512m",
        dns=[RESOLVER], dns_opt=["timeout:1", "attempts:1"],
        environment=proxy_env(PROXY_IP, PROXY_PORT, (cred.user, cred.token)),
        volumes=[proxy_ca_bind()],
        labels={"org.airlock.managed": "true", "org.airlock.role": "test"},
    )
    try:
        container.start()
        container.wait(timeout=timeout_s)
        out = container.logs(stdout=True, stderr=False).decode().strip().splitlines()
        err = container.logs(stdout=False, stderr=True).decode()
        assert out, f"no output; stderr: {err}"
        return dict(json.loads(out[-1]))
    finally:
        container.remove(force=True)
        registry.revoke(cred.user)


def ns_targets(stack: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, addr) for name, addr, *_ in stack["targets"] if not name.startswith("host@")]


def assert_blocked(results: dict[str, dict[str, Any]]) -> None:
    broken = {k: v for k, v in results.items() if v["outcome"] in ("connected", "answered")}
    assert not broken, f"reached: {broken}"
    slow = {k: v for k, v in results.items() if v["s"] > FAST_S}
    assert not slow, f"refused, but slowly: {slow}"


def test_control_standins_count_a_real_leak(docker_client: docker.DockerClient,
                                            stack: dict[str, Any]) -> None:
    """Without our rules in the way (the proxy's own network), a contact is counted."""
    code = probes.job_code(probes.TCP_CONNECT, targets=[["private-10", "10.99.0.10", 80]])
    assert run_job(docker_client, code, network=EGRESS.name)["private-10"]["outcome"] == "connected"
    code = probes.job_code(probes.DNS_LOOKUP, names=[f"leak-{uuid.uuid4().hex[:8]}.example"])
    run_job(docker_client, code, network=EGRESS.name)
    counted = hits()
    assert counted["private-10"] == 1 and counted["dns-resolver"] > 0, counted


def test_a19_a21_a22_standins_unreachable_over_tcp_and_udp(docker_client: docker.DockerClient,
                                                           stack: dict[str, Any]) -> None:
    targets = [[f"{name}:{port}", addr, port] for name, addr in ns_targets(stack)
               for port in (80, 443, 22, 5432, 6379, 8080)]
    assert_blocked(run_job(docker_client, probes.job_code(probes.TCP_CONNECT, targets=targets)))
    udp = [[name, addr] for name, addr in ns_targets(stack)]
    assert_blocked(run_job(docker_client, probes.job_code(probes.UDP_SEND, targets=udp)))
    assert not any(hits().values()), hits()


def test_a19_encoded_metadata_addresses(docker_client: docker.DockerClient,
                                        stack: dict[str, Any]) -> None:
    targets = [[form, form, 80] for form in probes.METADATA_FORMS]
    results = run_job(docker_client, probes.job_code(probes.TCP_CONNECT, targets=targets))
    assert_blocked(results)
    assert results["2852039166"].get("address") == "169.254.169.254"  # the form did resolve
    assert hits()["metadata"] == 0


def test_a20_host_services_unreachable(docker_client: docker.DockerClient,
                                       stack: dict[str, Any]) -> None:
    host_targets = [[name, addr, int(tcp)] for name, addr, tcp, _ in stack["targets"]
                    if name.startswith("host@")]
    assert any(addr == WORKSPACE.gateway for _, addr, _ in host_targets), "no gateway stand-in"
    bridge_ll = sh("ip", "-6", "-o", "addr", "show", "dev", WORKSPACE.bridge, "scope", "link")
    for word in bridge_ll.stdout.split():
        if word.startswith("fe80::"):
            host_targets.append(["bridge-link-local:22", word.split("/")[0] + "%eth0", 22])
    host_targets += [[f"{name}:{port}", name, port]
                     for name, port in (("redis", 6379), ("postgres", 5432), ("flower", 5555))]
    results = run_job(docker_client, probes.job_code(probes.TCP_CONNECT, targets=host_targets))
    assert_blocked(results)
    assert all(results[f"{n}:{p}"]["outcome"] == "unresolved"
               for n, p in (("redis", 6379), ("postgres", 5432), ("flower", 5555)))
    assert not any(hits().values()), hits()


def test_dns_lookups_fail_fast_and_never_leave(docker_client: docker.DockerClient,
                                               stack: dict[str, Any]) -> None:
    names = ["pypi.org", "example.com", "metadata.google.internal", "redis", "postgres",
             f"exfil-{uuid.uuid4().hex[:12]}.example"]
    results = run_job(docker_client, probes.job_code(probes.DNS_LOOKUP, names=names))
    assert all(r["outcome"] == "failed" for r in results.values()), results
    assert max(r["s"] for r in results.values()) < 3.0, results
    assert hits()["dns-resolver"] == 0


def test_a21_second_job_on_the_same_network_unreachable(docker_client: docker.DockerClient,
                                                        stack: dict[str, Any]) -> None:
    listener = docker_client.containers.run(
        SANDBOX, ["python3", "-c", probes.job_code(probes.PEER_LISTEN, port=8000, seconds=4)],
        detach=True, user=JOB_USER, network=WORKSPACE.name, read_only=True,
        cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        labels={"org.airlock.managed": "true", "org.airlock.role": "test"},
    )
    try:
        deadline = time.monotonic() + 10
        while b"listening" not in listener.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        listener.reload()
        peer = listener.attrs["NetworkSettings"]["Networks"][WORKSPACE.name]["IPAddress"]
        results = run_job(docker_client, probes.job_code(probes.TCP_CONNECT,
                                                  targets=[["peer", peer, 8000]]))
        assert_blocked(results)
        listener.wait(timeout=30)
        assert json.loads(listener.logs().decode().splitlines()[-1]) == {"accepted": 0}
    finally:
        listener.remove(force=True)


def test_a22_proxy_allows_an_allowlisted_read(docker_client: docker.DockerClient,
                                              stack: dict[str, Any], pypi: PyPI) -> None:
    pypi.reset()
    result = run_job(docker_client, probes.job_code(
        probes.PIP_DOWNLOAD, package=f"{pypi.package}=={pypi.version}"))
    assert result["returncode"] == 0, result["tail"]
    assert result["files"] == [f"{pypi.package}-{pypi.version}-py3-none-any.whl"], result
    # from the stand-in, which the proxy resolves pypi.org and files.pythonhosted.org to
    assert {(r["host"], r["status"]) for r in pypi.requests()} == {
        ("pypi.org", 200), ("files.pythonhosted.org", 200)}, pypi.requests()


def test_the_proxy_resolves_every_registry_to_the_pypi_standin_only(
        docker_client: docker.DockerClient, stack: dict[str, Any], pypi: PyPI,
        pypi_tls: StandinTls, egress_settings: Settings) -> None:
    """No test reaches a real registry: the proxy itself resolves every allowlisted name (and
    the tenant endpoint) to a stand-in address (its /etc/hosts, which Squid reads before any
    DNS) and trusts nothing but the test CA's stand-in upstream."""
    proxy = docker_client.containers.get(stack["proxy"])
    hosts = proxy.exec_run(["cat", "/etc/hosts"]).output.decode().split("\n")
    resolved = {fields[1]: fields[0] for fields in (line.split() for line in hosts)
                if len(fields) == 2}
    assert {name: resolved.get(name) for name in egress_settings.egress.allowlist} == dict.fromkeys(
        egress_settings.egress.allowlist, PYPI_ADDRESS), hosts
    assert all(name in resolved for name in egress_settings.egress.tenant_endpoints), hosts
    ca = proxy.exec_run(["cat", "/etc/airlock/upstream-ca.pem"]).output.decode()
    assert egress_settings.egress.proxy_upstream_ca == str(pypi_tls.ca), egress_settings.egress
    assert ca == pypi_tls.ca.read_text() and ca.count("BEGIN CERTIFICATE") == 1, ca
    # An allowlisted read on the third registry's name is answered by the stand-in
    pypi.reset()
    got = run_job(docker_client, probes.job_code(probes.PROXY_REQUEST, requests=[
        ["npm", "GET", "https://registry.npmjs.org/airlock-probe"]]))["npm"]
    assert got["status"] == 404 and got["body"] == "not found\n", got
    assert [(r["host"], r["path"]) for r in pypi.requests()] == [
        ("registry.npmjs.org", "/airlock-probe")], pypi.requests()


@pytest.mark.parametrize(
    ("label", "method", "url", "says"),
    [
        ("domain", "GET", "https://example.com/", "is not on the egress allowlist"),
        ("domain-http", "GET", "http://example.com/", "is not on the egress allowlist"),
        ("unlisted-subdomain", "GET", "https://upload.pypi.org/legacy/", "not on the egress"),
        ("ip-literal", "GET", "http://10.99.0.10/", "IP addresses are not allowed"),
        ("metadata", "GET", "http://169.254.169.254/latest/meta-data/", "IP addresses"),
        ("metadata-decimal", "GET", "http://2852039166/", "IP addresses are not allowed"),
        ("metadata-hex", "GET", "http://0xA9FEA9FE/", "IP addresses are not allowed"),
        ("metadata-mapped", "GET", "http://[::ffff:169.254.169.254]/", "IP addresses"),
        ("port-8080", "GET", "http://pypi.org:8080/", "Only ports 80 and 443"),
        ("connect-8080", "GET", "https://pypi.org:8080/", "Only ports 80 and 443"),
        ("post-pypi", "POST", "https://pypi.org/simple/", "read-only"),
        ("put-npm", "PUT", "https://registry.npmjs.org/airlock-probe", "read-only"),
    ],
)
def test_a22_proxy_refuses_with_a_readable_error(docker_client: docker.DockerClient,
                                                 stack: dict[str, Any], label: str,
                                                 method: str, url: str, says: str) -> None:
    result = run_job(docker_client, probes.job_code(probes.PROXY_REQUEST,
                                             requests=[[label, method, url]]))[label]
    assert result["status"] == 403, result
    assert "Airlock egress proxy refused" in result["body"] and says in result["body"], result
    assert result["s"] < FAST_S, result
    assert not any(hits().values()), hits()


def test_a22_proxy_refuses_a_tls_tunnel_to_an_ip_literal(docker_client: docker.DockerClient,
                                                         stack: dict[str, Any]) -> None:
    # Squid refuses the CONNECT, but it answers inside TLS with a certificate that cannot
    # name an IP address, so the client fails on that certificate: fast, no connection.
    result = run_job(docker_client, probes.job_code(
        probes.PROXY_REQUEST, requests=[["ip", "GET", "https://10.99.0.10/"]]))["ip"]
    assert result["status"] is None and "certificate" in result["error"], result
    assert result["s"] < FAST_S, result
    assert hits()["private-10"] == 0
    denied = docker_client.containers.get(stack["proxy"]).logs(tail=50).decode()
    assert "TCP_DENIED/200 0 CONNECT 10.99.0.10:443" in denied
