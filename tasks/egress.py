"""A job's network, from the settings (docs/network.md).

A job has no network at all (``none``, the default) or, with ``network="egress"``, joins the
workspace network, where the one peer it can reach is the egress proxy: it gets the proxy in
its environment, the proxy's CA certificate read-only, and resolver options that make a name
lookup fail in about a second (no DNS server of its own: a forwarded lookup is refused by the
firewall). ``job_network`` is pure; ``prepare_host`` and ``check_firewall`` are the I/O of a
worker's start when ``egress_enabled``.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import docker

from base.errors import JobSpecError
from config.sections import DOMAIN
from config.settings import Settings
from workers import networks
from workers.networks import NetworkPlan
from workers.proxy_registry import Credential, Registry

FIREWALL_VERIFY = Path(__file__).resolve().parents[1] / "scripts" / "firewall" / "verify.sh"
VERIFY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class JobNetwork:
    """What a job's container (mode, DNS options, read-only binds) and payload (env) get, and
    the domains the proxy lets it reach (what an agent's inner sandbox allows: its tool
    commands reach those through its own proxy, chained to this one)."""

    mode: str = "none"
    dns_options: tuple[str, ...] = ()
    ro_binds: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    domains: tuple[str, ...] = ()


NO_NETWORK = JobNetwork()


def check_allowed(network: str, s: Settings) -> None:
    """A worker runs egress jobs only where egress is enabled (and the firewall verified)."""
    if network == "egress" and not s.egress.enabled:
        raise JobSpecError("network", "egress is not enabled on this fleet (egress_enabled is"
                                      " false on its workers); the job was not run")


def job_network(s: Settings, network: str, tenant_domains: tuple[str, ...] = (),
                credential: Credential | None = None) -> JobNetwork:
    """The job's network. ``tenant_domains``: its tenant's own endpoints, which it may reach
    beside the common allowlist; ``credential``: its attempt's proxy credential, put in the
    proxy variables (the payload's only: never a spec, record or log)."""
    if network == "none":
        return NO_NETWORK
    if network != "egress":
        raise JobSpecError("network", f"unknown network {network!r}")
    auth = (credential.user, credential.token) if credential is not None else None
    return JobNetwork(
        mode=s.egress.workspace_network,
        dns_options=networks.WORKSPACE_DNS_OPTIONS,
        ro_binds={networks.CA_VOLUME: networks.CA_DIR},
        env=networks.proxy_env(s.egress.proxy_ip, s.egress.proxy_port, auth),
        domains=tuple(dict.fromkeys((*domains(s), *tenant_domains))),
    )


def domains(s: Settings) -> tuple[str, ...]:
    """The fleet's common allowlist, in order, once: ``egress_allowlist`` and the deprecated
    ``egress_tenant_endpoints`` (which every tenant may reach; a tenant's own endpoints are
    set with ``airlock tenant set-egress`` and reachable by its jobs only)."""
    return tuple(dict.fromkeys((*s.egress.allowlist, *s.egress.tenant_endpoints)))


MAX_TENANT_DOMAINS = 100


def check_domains(given: Iterable[str]) -> tuple[str, ...]:
    """A tenant's endpoints as the proxy matches them: lower-case host names, a leading dot
    for subdomains too; no IP addresses, no other wildcards. Once each, in order."""
    out: list[str] = []
    for raw in given:
        name = raw.strip().lower().removesuffix(".")
        out.append(_checked_domain(raw, name))
    if len(out) > MAX_TENANT_DOMAINS:
        raise JobSpecError("egress_domains", f"{len(out)} domains, over the {MAX_TENANT_DOMAINS}"
                                             " a tenant may have")
    return tuple(dict.fromkeys(out))


def _checked_domain(raw: str, name: str) -> str:
    field_ = f"egress_domains[{raw[:60]!r}]"
    bare = name.lstrip(".").strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        raise JobSpecError(field_, "an IP address; give the endpoint's host name")
    if "*" in name:
        raise JobSpecError(field_, "wildcards are not allowed; a leading dot (.example.org)"
                                   " allows the domain and its subdomains")
    if len(name) > 253 or not DOMAIN.match(name):
        raise JobSpecError(field_, "not a host name (letters, digits and dashes in dot-separated"
                                   " labels, ending in a top-level domain)")
    return name


def allowlist(s: Settings) -> str:
    return ",".join(domains(s))


def network_plans(s: Settings) -> tuple[NetworkPlan, NetworkPlan, NetworkPlan]:
    """Backend, workspace and egress networks; jobs get addresses in the workspace's upper
    half, so the proxy's fixed address (in the lower half) is never handed to a job."""
    upper = list(ipaddress.ip_network(s.egress.workspace_subnet).subnets(prefixlen_diff=1))[1]
    return (
        NetworkPlan(s.egress.backend_network, s.egress.backend_subnet, s.egress.backend_bridge),
        NetworkPlan(s.egress.workspace_network, s.egress.workspace_subnet, s.egress.workspace_bridge,
                    ip_range=str(upper), internal=True, icc=False),
        NetworkPlan(s.egress.egress_network, s.egress.egress_subnet, s.egress.egress_bridge),
    )


def prepare_host(s: Settings, client: docker.APIClient | docker.DockerClient) -> str:
    """Make the registry folder; create the networks and start the proxy unless already
    there as configured (with ``proxy_managed=external``, only check that the networks are
    as planned and the proxy is there, reading the registry); wait until the proxy is
    healthy. Idempotent. Returns the proxy's container id."""
    Registry(s.egress.registry_dir).ensure()
    backend, workspace, egress = network_plans(s)
    networks.ensure_networks(client, backend=backend, workspace=workspace, egress=egress)
    if s.egress.proxy_managed == "external":
        cid = networks.external_proxy(client, s.egress.registry_dir)
    else:
        cid = networks.ensure_proxy(
            client, image=s.egress.proxy_image, ip=s.egress.proxy_ip, port=s.egress.proxy_port,
            allowlist=allowlist(s), workspace=workspace, egress=egress,
            upstream_ca=s.egress.proxy_upstream_ca, hosts=s.egress.proxy_hosts,
            registry=s.egress.registry_dir,
        )
    networks.wait_proxy(client, cid)
    return cid


def firewall_env(s: Settings) -> dict[str, str]:
    """scripts/firewall/lib.sh's settings, from ours (the same names)."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "AIRLOCK_WORKSPACE_SUBNET": s.egress.workspace_subnet,
        "AIRLOCK_WORKSPACE_BRIDGE": s.egress.workspace_bridge,
        "AIRLOCK_BACKEND_SUBNET": s.egress.backend_subnet,
        "AIRLOCK_EGRESS_SUBNET": s.egress.egress_subnet,
        "AIRLOCK_EGRESS_BRIDGE": s.egress.egress_bridge,
        "AIRLOCK_PROXY_IP": s.egress.proxy_ip,
        "AIRLOCK_PROXY_PORT": str(s.egress.proxy_port),
    }


def check_firewall(s: Settings, script: Path = FIREWALL_VERIFY) -> str | None:
    """Run scripts/firewall/verify.sh for these settings: None if every rule is in place,
    otherwise what it reported (each missing or changed rule by name)."""
    try:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                              env=firewall_env(s), timeout=VERIFY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {script}: {exc}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return f"{script.name} exit {done.returncode}: " + " | ".join(lines[-12:])
