"""The inner sandbox of an agent job (the security design's layer 6): the settings Airlock, not
the job, writes for it.

An agent job's tool commands run in bubblewrap, set up by Claude Code (whose CLI the Agent SDK
bundles) or by srt (``@anthropic-ai/sandbox-runtime``, the same sandbox code). Both read their
policy from files Airlock writes into the container's own host folder and binds read-only:

- ``/etc/claude-code/managed-settings.json``: Claude Code's managed settings, which outrank the
  job's own (the SDK's options, a workspace's ``.claude/settings.json``): the sandbox on, the
  session refused if it cannot start, no command let out of it, writes under /workspace only,
  network only to the job's egress allowlist (through the egress proxy: the CLI chains its
  own proxy to ``HTTPS_PROXY``), and the job's secrets unset in every sandboxed command.
- ``/etc/airlock/srt-settings.json``: the same policy in srt's shape (``srt --settings``), which
  the preflight's canary uses.

The CLI's own default write set is wider than srt's (``$HOME``, ``/opt/venv``, ``/tmp``):
``denyWrite`` names what must stay read-only, and its temporary folder moves under /workspace
(``CLAUDE_CODE_TMPDIR``), so that /tmp can be denied too. ``CLAUDE_CODE_SUBPROCESS_ENV_SCRUB``
also drops the CLI's own credentials (ANTHROPIC_API_KEY, cloud keys) from tool commands.
Pure but for ``write``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

MANAGED = "claude-managed-settings.json"
SRT = "srt-settings.json"
HOSTS = "hosts"
TARGETS = {MANAGED: "/etc/claude-code/managed-settings.json",
           SRT: "/etc/airlock/srt-settings.json", HOSTS: "/etc/hosts"}
# The sandbox's bridges dial "localhost"; a container without a network has an empty
# /etc/hosts (the engine writes none), so a job without egress gets this one.
HOSTS_TEXT = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
WRITABLE = ("/workspace",)
# The CLI's defaults would let a tool command write these (measured with CLI 2.1.337).
READ_ONLY = ("/home/appuser", "/opt/venv", "/tmp", "/var/tmp", "/run")
TMPDIR = "/workspace/.claude-tmp"  # the CLI's own temporary files, inside the writable set
# The CLI's environment: sandbox and scrub on whatever its settings say, and no traffic of its
# own but the model's (no telemetry, error reports, updates, feature flags).
ENV = {
    "CLAUDE_CODE_SUBPROCESS_ENV_SCRUB": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_TMPDIR": TMPDIR,
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_FEEDBACK_COMMAND": "1",
}


@dataclass(frozen=True, slots=True)
class InnerSandbox:
    """One agent job's policy: the domains its tool commands may reach (its egress allowlist,
    in the proxy's spelling: ``.example.org`` also allows subdomains) and the names of its
    secrets, never their values."""

    allowed_domains: tuple[str, ...] = ()
    secret_names: tuple[str, ...] = ()


def patterns(domains: tuple[str, ...]) -> list[str]:
    """The proxy's allowlist entries as the sandbox's patterns (``*.example.org``)."""
    out: list[str] = []
    for domain in domains:
        bare = domain.removeprefix(".")
        out += [bare, f"*.{bare}"] if domain.startswith(".") else [bare]
    return list(dict.fromkeys(out))


def _credentials(box: InnerSandbox) -> dict[str, Any]:
    return {"envVars": [{"name": name, "mode": "deny"} for name in box.secret_names]}


def managed_settings(box: InnerSandbox) -> dict[str, Any]:
    """Claude Code's managed settings for the job."""
    return {
        "sandbox": {
            "enabled": True,
            "failIfUnavailable": True,
            "allowUnsandboxedCommands": False,
            "enableWeakerNestedSandbox": False,
            "autoAllowBashIfSandboxed": True,
            "excludedCommands": [],
            "network": {"allowedDomains": patterns(box.allowed_domains),
                        "allowManagedDomainsOnly": True},
            "filesystem": {"allowWrite": list(WRITABLE), "denyWrite": list(READ_ONLY)},
            "credentials": _credentials(box),
        },
        "permissions": {"disableBypassPermissionsMode": "disable"},
        "env": dict(ENV),
    }


def srt_settings(box: InnerSandbox) -> dict[str, Any]:
    """The same policy for ``srt --settings``."""
    return {
        "network": {"allowedDomains": patterns(box.allowed_domains), "deniedDomains": []},
        "filesystem": {"denyRead": [], "allowWrite": list(WRITABLE), "denyWrite": list(READ_ONLY)},
        "enableWeakerNestedSandbox": False,
        "credentials": _credentials(box),
    }


def texts(box: InnerSandbox) -> dict[str, str]:
    """Each file's name in the container's folder and its text."""
    return {MANAGED: json.dumps(managed_settings(box), indent=2) + "\n",
            SRT: json.dumps(srt_settings(box), indent=2) + "\n", HOSTS: HOSTS_TEXT}


def mounts(host_folder: str, hosts: bool) -> list[dict[str, object]]:
    """The engine's Mounts for the files (pure): missing files fail the create. ``hosts``: the
    container has no network, hence no /etc/hosts of the engine's."""
    return [{"Type": "bind", "Source": os.path.join(host_folder, name), "Target": target,
             "ReadOnly": True} for name, target in TARGETS.items() if hosts or name != HOSTS]


def write(dir_fd: int, box: InnerSandbox) -> None:
    """Write the files into the container's own folder (opened by the caller)."""
    for name, text in texts(box).items():
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o644)  # past the umask: the job's uid reads them
        finally:
            os.close(fd)
