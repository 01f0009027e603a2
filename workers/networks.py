"""Airlock's Docker networks and its egress proxy: created once per host, idempotently.

    airlock-backend    Redis, PostgreSQL, Flower and the worker (compose deployments)
    airlock-workspace  jobs with egress. internal: Docker drops whatever leaves the
                       subnet; enable_icc=false: no job-to-job traffic. The one peer a
                       job can reach is the proxy, at a fixed address below the dynamic
                       range, once scripts/firewall/apply.sh accepts it (fail closed).
    airlock-egress     the proxy's way out; nothing else joins it

Jobs without egress run with network "none". The bridge interface names are fixed so
that scripts/firewall/*.sh can match them.

DNS, measured on Docker 20.10: the embedded resolver (127.0.0.11) forwards a job's
lookups from the job's own network namespace, with the job's address, so the firewall
refuses them and nothing leaves; but the resolver then never answers, and the job's libc
would wait 2 x 5 s. WORKSPACE_DNS_OPTIONS make such a lookup fail in about 1 s. Give jobs
no ``dns`` servers of their own (never a loopback one). Newer engines stop forwarding for
internal networks altogether, which is one more reason the workspace network is internal.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from base.errors import HostNotSafe
from workers import labels as L
from workers.engine import translated

ROLE_PROXY = "proxy"
PROXY_NAME = "airlock-egress-proxy"
CONFIG_LABEL = "org.airlock.config"
PROXY_PORT = 3128
CA_VOLUME = "airlock-egress-ca"
CA_DIR = "/etc/airlock/egress-ca"  # in the proxy (written) and in jobs (read-only)
CA_FILE = f"{CA_DIR}/ca.pem"
UPSTREAM_CA_FILE = "/etc/airlock/upstream-ca.pem"
REGISTRY_DIR = "/etc/airlock/egress-registry"  # in the proxy, read-only
WORKSPACE_DNS_OPTIONS = ("timeout:1", "attempts:1")  # HostConfig DnsOptions of egress jobs
PROXY_UID = 13  # Debian's fixed uid and gid of user "proxy" (base-passwd), Squid's user


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    name: str
    subnet: str
    bridge: str  # Linux interface name (at most 15 characters)
    ip_range: str | None = None  # where Docker picks job addresses; fixed ones stay below
    internal: bool = False
    icc: bool = True

    @property
    def gateway(self) -> str:  # the bridge's own address: the subnet's first host
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def options(self) -> dict[str, str]:
        return {
            "com.docker.network.bridge.name": self.bridge,
            "com.docker.network.bridge.enable_icc": str(self.icc).lower(),
        }


BACKEND = NetworkPlan("airlock-backend", "172.28.0.0/24", "airlock-be0")
WORKSPACE = NetworkPlan(
    "airlock-workspace", "172.29.0.0/24", "airlock-ws0",
    ip_range="172.29.0.128/25", internal=True, icc=False,
)
EGRESS = NetworkPlan("airlock-egress", "172.30.0.0/24", "airlock-eg0")


def differences(plan: NetworkPlan, attrs: Mapping[str, Any]) -> list[str]:
    """What an existing network (``inspect_network`` output) has that the plan does not."""
    configs = (attrs.get("IPAM") or {}).get("Config") or [{}]
    options = attrs.get("Options") or {}
    seen = {
        "driver": attrs.get("Driver"),
        "subnet": configs[0].get("Subnet"),
        "ip_range": configs[0].get("IPRange") or None,
        "gateway": configs[0].get("Gateway"),
        "internal": bool(attrs.get("Internal")),
        **{key: options.get(key) for key in plan.options()},
    }
    wanted = {
        "driver": "bridge", "subnet": plan.subnet, "ip_range": plan.ip_range,
        "gateway": plan.gateway,
        "internal": plan.internal, **plan.options(),
    }
    return [f"{k}={seen[k]!r} (want {v!r})" for k, v in wanted.items() if seen[k] != v]


def ensure_networks(
    client: docker.APIClient | docker.DockerClient,
    *,
    backend: NetworkPlan = BACKEND,
    workspace: NetworkPlan = WORKSPACE,
    egress: NetworkPlan = EGRESS,
) -> None:
    """Create each network if missing; refuse (HostNotSafe) if one exists but differs."""
    api = _api(client)
    for plan in (backend, workspace, egress):
        _ensure_network(api, plan)


def _ensure_network(api: docker.APIClient, plan: NetworkPlan) -> None:
    attrs = _find_network(api, plan.name)
    if attrs is None:
        pool = {"subnet": plan.subnet, "gateway": plan.gateway}
        if plan.ip_range:
            pool["iprange"] = plan.ip_range
        with translated(f"create network {plan.name}"):
            try:
                api.create_network(
                    plan.name, driver="bridge", options=plan.options(), internal=plan.internal,
                    ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(**pool)]),
                    labels={L.MANAGED: "true"}, check_duplicate=True,
                )
                return
            except docker.errors.APIError as exc:  # lost a race: verify the winner's network
                if exc.status_code != 409:
                    raise
        attrs = _find_network(api, plan.name)
    problems = differences(plan, attrs or {})
    if problems:
        raise HostNotSafe(
            f"Docker network {plan.name} exists with other settings: {'; '.join(problems)}."
            f" Remove it (docker network rm {plan.name}) or change the configured plan."
        )


def _find_network(api: docker.APIClient, name: str) -> dict[str, Any] | None:
    with translated(f"inspect network {name}"):
        found = [n for n in api.networks(names=[name]) if n["Name"] == name]
        return api.inspect_network(found[0]["Id"]) if found else None


def proxy_env(ip: str, port: int = PROXY_PORT,
              auth: tuple[str, str] | None = None) -> dict[str, str]:
    """Environment for a job with egress: every common client goes through the proxy by IP
    (no DNS needed), with the attempt's credential (``auth``: user and token, URL-safe), and
    trusts only the proxy's CA, mounted read-only at CA_FILE."""
    userinfo = f"{auth[0]}:{auth[1]}@" if auth else ""
    url = f"http://{userinfo}{ip}:{port}"
    env = {name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                                  "PIP_PROXY", "npm_config_proxy", "npm_config_https_proxy")}
    env |= {name: CA_FILE for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                                       "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                                       "npm_config_cafile")}
    return env | {"NO_PROXY": "", "no_proxy": ""}


def proxy_ca_bind() -> str:
    """The Binds entry that gives a job the proxy's CA certificate (never its key)."""
    return f"{CA_VOLUME}:{CA_DIR}:ro"


def ensure_proxy(
    client: docker.APIClient | docker.DockerClient,
    *,
    image: str,
    ip: str,
    allowlist: str,
    name: str = PROXY_NAME,
    port: int = PROXY_PORT,
    workspace: NetworkPlan = WORKSPACE,
    egress: NetworkPlan = EGRESS,
    upstream_ca: str | None = None,
    hosts: Mapping[str, str] | None = None,
    registry: str | None = None,
) -> str:
    """Start the egress proxy unless it already runs with this configuration; its id.

    ``upstream_ca``: a host path to extra CA certificates the proxy trusts for upstream TLS
    (only where the host's own egress intercepts TLS); public CAs are trusted anyway.
    ``hosts``: names the proxy resolves itself (its /etc/hosts), name -> address.
    ``registry``: the host folder of jobs' credentials and tenants' endpoints, bound
    read-only (per-tenant egress: workers/proxy_registry.py).
    """
    api = _api(client)
    _check_proxy_ip(ip, workspace)
    with translated(f"inspect image {image}"):
        image_id = api.inspect_image(image)["Id"]
    extra_hosts = [f"{name}:{address}" for name, address in sorted((hosts or {}).items())]
    config = _digest(image_id, ip, allowlist, str(port), workspace.name, egress.name,
                     upstream_ca or "", registry or "", *extra_hosts)
    current = _find_container(api, name)
    if current and current["Config"]["Labels"].get(CONFIG_LABEL) == config:
        if not current["State"]["Running"]:
            with translated(f"start {name}"):
                api.start(current["Id"])
        return str(current["Id"])
    if current:  # another configuration (allowlist, image, address): replace it
        with translated(f"remove outdated {name}"):
            api.remove_container(current["Id"], force=True)
    with translated(f"create volume {CA_VOLUME}"):  # returns the existing one if present
        api.create_volume(CA_VOLUME, labels={L.MANAGED: "true", L.ROLE: ROLE_PROXY})
    kwargs = proxy_create_kwargs(
        api, image=image, ip=ip, allowlist=allowlist, name=name, port=port,
        workspace=workspace, upstream_ca=upstream_ca, config=config, extra_hosts=extra_hosts,
        registry=registry,
    )
    with translated(f"create {name}"):
        cid = str(api.create_container(**kwargs)["Id"])
        api.connect_container_to_network(cid, egress.name)
        api.start(cid)
    return cid


def external_proxy(client: docker.APIClient | docker.DockerClient, registry: str,
                   name: str = PROXY_NAME) -> str:
    """The id of a proxy someone else runs (docker-compose.yml's ``proxy`` service): it must
    exist and read ``registry`` (read-only) as its registry, or jobs' credentials would mean
    nothing to it. HostNotSafe otherwise."""
    api = _api(client)
    found = _find_container(api, name)
    if found is None:
        raise HostNotSafe(f"AIRLOCK_PROXY_MANAGED=external, but there is no container {name}"
                          " (start the compose service proxy first)")
    problems = proxy_problems(found, registry)
    if problems:
        raise HostNotSafe(f"the egress proxy {name} is not as per-tenant egress needs it:"
                          f" {'; '.join(problems)}")
    return str(found["Id"])


def proxy_problems(attrs: Mapping[str, Any], registry: str) -> list[str]:
    """Pure: what an existing proxy container (``inspect_container``) lacks."""
    mounts = [m for m in attrs.get("Mounts") or () if m.get("Destination") == REGISTRY_DIR]
    env = dict(e.partition("=")[::2] for e in (attrs.get("Config") or {}).get("Env") or ())
    problems = []
    if not mounts or mounts[0].get("Source") != registry or mounts[0].get("RW"):
        problems.append(f"{registry} is not bound read-only at {REGISTRY_DIR}")
    if env.get("AIRLOCK_EGRESS_REGISTRY") != REGISTRY_DIR:
        problems.append(f"AIRLOCK_EGRESS_REGISTRY is not {REGISTRY_DIR}")
    return problems


def wait_proxy(client: docker.APIClient | docker.DockerClient, cid: str,
               within_s: float = 60.0) -> None:
    """Wait until the proxy's health check passes (its first run is 5 s after a start);
    HostNotSafe if it exits or stays unhealthy."""
    api = _api(client)
    deadline = time.monotonic() + within_s
    while True:
        with translated("inspect the egress proxy"):
            state = api.inspect_container(cid)["State"]
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy":
            return
        if not state.get("Running") or time.monotonic() > deadline:
            with translated("read the egress proxy's log"):
                tail = api.logs(cid, tail=20).decode("utf-8", "replace")
            raise HostNotSafe(f"the egress proxy is not healthy ({health or state.get('Status')})"
                              f" after {within_s:g} s; its log ends: {tail[-1500:]}")
        time.sleep(0.25)


def proxy_create_kwargs(
    api: docker.APIClient, *, image: str, ip: str, allowlist: str, name: str, port: int,
    workspace: NetworkPlan, upstream_ca: str | None, config: str,
    extra_hosts: list[str] | None = None, registry: str | None = None,
) -> dict[str, Any]:
    binds = [f"{CA_VOLUME}:{CA_DIR}:rw"]
    if upstream_ca:
        binds.append(f"{upstream_ca}:{UPSTREAM_CA_FILE}:ro")
    if registry:
        binds.append(f"{registry}:{REGISTRY_DIR}:ro")
    host_config = api.create_host_config(
        binds=binds,
        network_mode=workspace.name,
        restart_policy={"Name": "unless-stopped"},
        read_only=True,
        tmpfs={
            "/run": f"rw,noexec,nosuid,nodev,size=64m,uid={PROXY_UID},gid={PROXY_UID},mode=0700",
            "/var/spool/squid": f"rw,noexec,nosuid,nodev,size=64m,uid={PROXY_UID},gid={PROXY_UID}",
            "/tmp": "rw,noexec,nosuid,nodev,size=16m,mode=1777",
        },
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        mem_limit="512m",
        pids_limit=256,
        log_config={"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        extra_hosts=extra_hosts or None,
    )
    return {
        "image": image,
        "name": name,
        "hostname": "egress-proxy",
        "environment": {
            "AIRLOCK_EGRESS_ALLOWLIST": allowlist,
            "AIRLOCK_PROXY_PORT": str(port),
            "AIRLOCK_UPSTREAM_CA": UPSTREAM_CA_FILE if upstream_ca else "",
            "AIRLOCK_EGRESS_REGISTRY": REGISTRY_DIR if registry else "",
        },
        "labels": {L.MANAGED: "true", L.ROLE: ROLE_PROXY, CONFIG_LABEL: config},
        "host_config": host_config,
        "networking_config": api.create_networking_config(
            {workspace.name: api.create_endpoint_config(ipv4_address=ip)}
        ),
        "use_config_proxy": False,
    }


def _check_proxy_ip(ip: str, workspace: NetworkPlan) -> None:
    address = ipaddress.ip_address(ip)
    if address not in ipaddress.ip_network(workspace.subnet):
        raise HostNotSafe(f"proxy address {ip} is outside {workspace.name} ({workspace.subnet})")
    if workspace.ip_range and address in ipaddress.ip_network(workspace.ip_range):
        raise HostNotSafe(f"proxy address {ip} is inside the job range {workspace.ip_range}")


def _find_container(api: docker.APIClient, name: str) -> dict[str, Any] | None:
    try:
        with translated(f"inspect {name}"):
            return dict(api.inspect_container(name))
    except docker.errors.NotFound:
        return None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _api(client: docker.APIClient | docker.DockerClient) -> docker.APIClient:
    return client.api if isinstance(client, docker.DockerClient) else client
