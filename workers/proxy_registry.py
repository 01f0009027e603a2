"""The egress proxy's registry: live jobs' proxy credentials and tenants' endpoints, as files
the workers write and the proxy reads (read-only; images/proxy/registry_helper.py).

    <root>/creds/<user>        "<sha256 hex of the token> <tenant> <expiry, epoch seconds>"
    <root>/tenants/<tenant>    the tenant's own domains, one a line

Each attempt of an egress job gets a credential of its own: a user name saying which attempt,
and 256 random bits as its token. Only the token's hash is written (the token itself is in
the job's payload and nowhere else), each file whole or not at all (written aside, then
renamed). An attempt removes its file when it ends; a credential whose job no longer runs
is removed by the housekeeping (``stale``), and an expired one is refused by the proxy anyway.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROXY_GID = 13  # the proxy container's group (Debian's "proxy"): it may read, nothing else
USER = re.compile(r"^job-([0-9a-f]{32})-(\d{1,6})-[0-9a-f]{6}$")


@dataclass(frozen=True, slots=True)
class Credential:
    """One attempt's proxy credential. ``token`` never goes to a log, a record or a file."""

    user: str
    token: str
    tenant: str
    expires_at: float

    def __repr__(self) -> str:  # the token stays out of any traceback or log line
        return f"Credential(user={self.user!r}, tenant={self.tenant!r})"

    @property
    def line(self) -> str:
        digest = hashlib.sha256(self.token.encode()).hexdigest()
        return f"{digest} {self.tenant} {self.expires_at:.0f}\n"


def new_credential(job_id: str, attempt: int, tenant: str, expires_at: float) -> Credential:
    user = f"job-{job_id.replace('-', '')}-{attempt}-{secrets.token_hex(3)}"
    return Credential(user, secrets.token_urlsafe(32), tenant, expires_at)


def job_of(user: str) -> tuple[str, int] | None:
    """(job id, attempt) a credential's user name stands for; None for any other name."""
    found = USER.match(user)
    if found is None:
        return None
    raw = found.group(1)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}", int(found.group(2))


def tenant_text(domains: Iterable[str]) -> str:
    return "".join(f"{d}\n" for d in domains)


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.creds = self.root / "creds"
        self.tenants = self.root / "tenants"

    def ensure(self) -> Registry:
        """The folders, readable by root and the proxy's group only."""
        for folder in (self.root, self.creds, self.tenants):
            folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(folder, 0, PROXY_GID)
            folder.chmod(0o750)
        return self

    def register(self, cred: Credential) -> None:
        _write(self.creds / cred.user, cred.line)

    def revoke(self, user: str) -> None:
        (self.creds / user).unlink(missing_ok=True)

    def users(self) -> list[str]:
        try:
            return [p.name for p in self.creds.iterdir() if not p.name.startswith(".")]
        except FileNotFoundError:
            return []

    def age(self, user: str, now: float) -> float:
        """Seconds since the credential was written (infinite when it is gone)."""
        try:
            return now - (self.creds / user).stat().st_mtime
        except OSError:
            return float("inf")

    def expired(self, now: float) -> list[str]:
        """Credentials past their expiry (the proxy refuses them already)."""
        out = []
        for user in self.users():
            try:
                expiry = float((self.creds / user).read_text().split()[2])
            except (OSError, ValueError, IndexError):
                expiry = 0.0
            if expiry < now:
                out.append(user)
        return out

    def write_tenant(self, tenant: str, domains: Iterable[str]) -> None:
        """The tenant's endpoints, or no file when it has none."""
        text = tenant_text(domains)
        path = self.tenants / tenant
        if not text:
            path.unlink(missing_ok=True)
        elif not path.exists() or path.read_text() != text:
            _write(path, text)

    def write_tenants(self, domains: Mapping[str, Iterable[str]]) -> None:
        """Every tenant's endpoints as PostgreSQL has them; files of others removed."""
        for tenant, listed in domains.items():
            self.write_tenant(tenant, listed)
        for path in self.tenants.iterdir():
            if path.name not in domains and not path.name.startswith("."):
                path.unlink(missing_ok=True)


def stale(users: Iterable[str], running: Mapping[str, int]) -> list[str]:
    """Pure: the credentials whose attempt is not the running one of its job (``running``:
    job id -> attempt, of the jobs that run). A name that is not ours is stale too."""
    out = []
    for user in users:
        owner = job_of(user)
        if owner is None or running.get(owner[0]) != owner[1]:
            out.append(user)
    return out


def _write(path: Path, text: str) -> None:
    """Whole or not at all: written aside, then renamed over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, 0, PROXY_GID)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
