"""A worker's start, before it takes jobs: fail closed on a host that cannot hold a job, refuse a
database or Redis it cannot use (one line, at once), wait (saying so) for one it cannot reach
yet, then the preflight's canaries (``tasks.preflight``)."""

from __future__ import annotations

import grp
import pwd
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import redis
import sqlalchemy as sa
import structlog
from sqlalchemy import exc as sa_exc

from base.errors import HostNotSafe
from config.settings import Settings
from tasks import egress, migrate, streams
from tasks.store import make_engine
from workers import apparmor, engine
from workers.storage import volumes_for

log = structlog.get_logger(__name__)
T = TypeVar("T")
WAIT_LOG_EVERY_S = 10.0
# What PostgreSQL says (after "FATAL:") when it answered and will not let this worker in, so
# waiting cannot help; each clue's words must all appear. Anything else ("the database system
# is starting up", "too many connections", a refused connection) is waited out.
REFUSALS = (
    (("permission denied",), "permission denied"),
    (("password authentication failed",), "wrong credentials"),
    (('role "', "does not exist"), "wrong credentials"),
    (('database "', "does not exist"), "no such database"),
    (("no pg_hba.conf entry",), "this host may not connect (pg_hba.conf)"),
)


def database_refusal(message: str) -> str | None:
    """Pure: a one-line reason when PostgreSQL refused this worker for good; None for an
    outage it may recover from."""
    if "FATAL:" not in message:
        return None
    fatal = message.split("FATAL:", 1)[1].strip().splitlines()[0].strip()
    for clues, reason in REFUSALS:
        if all(clue in fatal for clue in clues):
            return f"{reason}: {fatal}"
    return None


def schema_refusal(current: str | None, head: str | None, known: bool) -> str | None:
    """Pure: why this code cannot run on a schema at ``current`` (``known``: the code has that
    migration), or None when they match."""
    if current == head:
        return None
    if current is None:
        return f"the database has no schema; this code needs migration {head}: run airlock db upgrade"
    if not known:
        return (f"the database schema is at migration {current}, which this code does not know"
                f" (its newest is {head}): the schema is ahead; upgrade this worker's code")
    return (f"the database schema is at migration {current}, behind this code's {head}:"
            " run airlock db upgrade")


def patiently(what: str, attempt: Callable[[], T], fatal: Callable[[Exception], str | None],
              wait_s: float | None = None) -> T:
    """``attempt()`` until it succeeds; an error ``fatal`` names is raised as HostNotSafe at
    once, any other is waited out (logged every ``WAIT_LOG_EVERY_S``), for ``wait_s`` at most
    (None: as long as it takes)."""
    started = time.monotonic()
    said = 0.0
    delay = 0.5
    while True:
        try:
            return attempt()
        except Exception as exc:
            reason = fatal(exc)
            if reason is not None:
                raise HostNotSafe(f"{what}: {reason}") from exc
            waited = time.monotonic() - started
            if wait_s is not None and waited >= wait_s:
                raise HostNotSafe(f"{what}: not reachable within {wait_s:g} s"
                                  f" (AIRLOCK_CONTROL_PLANE_WAIT_S): {_line(exc)}") from exc
            if waited - said >= WAIT_LOG_EVERY_S or said == 0.0:
                log.warning("worker.waiting", service=what, waited_s=round(waited), error=_line(exc))
                said = max(waited, 1e-9)
            time.sleep(delay if wait_s is None else max(0.0, min(delay, wait_s - waited)))
            delay = min(delay * 2, 5.0)


def _line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return " ".join(t.strip() for t in text[:2])[:300]


def check_database(s: Settings, wait_s: float | None = None) -> None:
    """Connect for real, then compare the schema's migration with this code's."""
    def connect() -> None:
        eng = make_engine(s.database_url)
        try:
            with eng.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            eng.dispose()

    def refusal(exc: Exception) -> str | None:
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return database_refusal(str(exc.orig or exc))
        return f"{type(exc).__name__}: {_line(exc)}"

    patiently("PostgreSQL", connect, refusal, wait_s)
    current, head = migrate.current_and_head(s.database_url)
    problem = schema_refusal(current, head, migrate.known_revision(s.database_url, current))
    if problem is not None:
        raise HostNotSafe(f"PostgreSQL: {problem}")


def check_redis(s: Settings, wait_s: float | None = None) -> None:
    def ping() -> None:
        conn = streams.connect(s.redis_url, s.sentinel_master)
        try:
            conn.ping()
        finally:
            conn.close()

    def refusal(exc: Exception) -> str | None:
        if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.ResponseError):
            return f"refused: {_line(exc)}"
        return None if isinstance(exc, redis.exceptions.RedisError) else _line(exc)

    patiently("Redis", ping, refusal, wait_s)


def uid_clash(first: int, count: int, accounts: Iterable[tuple[str, int, int]]) -> str | None:
    """Pure: the first account (what, id, how many ids) whose ids overlap the jobs' range, as
    a line; None when none does."""
    last = first + count - 1
    for what, start, n in accounts:
        if start <= last and start + n - 1 >= first:
            return (f"{what} uses {start}" + (f"..{start + n - 1}" if n > 1 else "")
                    + f", inside the jobs' uids {first}..{last} (set AIRLOCK_JOB_UID_FIRST)")
    return None


def host_accounts(etc: Path = Path("/etc")) -> Iterator[tuple[str, int, int]]:
    """Every uid and gid the host's accounts use, and the subordinate ranges handed out."""
    yield from ((f"user {p.pw_name}", p.pw_uid, 1) for p in pwd.getpwall())
    yield from ((f"group {g.gr_name}", g.gr_gid, 1) for g in grp.getgrall())
    for table in ("subuid", "subgid"):
        try:
            lines = (etc / table).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                yield f"{table} range of {parts[0]}", int(parts[1]), int(parts[2])


def check_identities(s: Settings) -> None:
    """No account of the host may share a uid with a job (nor a job with another)."""
    clash = uid_clash(s.sandbox.uid_first, s.sandbox.uid_count, host_accounts())
    if clash is not None:
        raise HostNotSafe(f"job identities: {clash}")


def check_host(s: Settings) -> Settings:
    """Fail closed before taking jobs: the engine answers, has the runtime, and the disk bound
    holds; with egress, the networks and the proxy are up (the preflight then verifies the
    firewall). Returns the settings with the runtime resolved (empty: the engine's default,
    by name)."""
    api = engine.connect(s.docker_host)
    s = s.but(runtime=engine.runtime_for(api, s.runtime))
    s = check_apparmor(s)
    if s.membership.name_from == "engine":
        s = s.but(hostname=engine_name(api))
    if s.egress.enabled:
        egress.prepare_host(s, api)
        if s.egress.tenant_endpoints:  # every tenant reaches these: say so at each start
            log.warning("egress.deprecated_tenant_endpoints", domains=list(s.egress.tenant_endpoints),
                        hint="AIRLOCK_EGRESS_TENANT_ENDPOINTS is merged into the common allowlist;"
                             " give each tenant its own: airlock tenant set-egress")
    volumes_for(s.storage, s.sandbox.volumes_root).check()
    check_identities(s)
    return s


def engine_name(api: object) -> str:
    """The Docker host's own name, as its engine says it (``docker info``'s Name)."""
    info = engine.call("engine info", api.info)  # type: ignore[attr-defined]
    name = str(info.get("Name") or "").strip()
    if not name:
        raise HostNotSafe("the engine says no host name (AIRLOCK_WORKER_NAME_FROM=engine)")
    return name


def check_apparmor(s: Settings, kernel: apparmor.Kernel | None = None) -> Settings:
    """Resolve AIRLOCK_APPARMOR for this host: "require" when the profile is applied, "off"
    when it is not; a worker that requires it refuses a host that cannot."""
    box = s.sandbox
    profile, reason = apparmor.decide(box.apparmor, box.apparmor_profile,
                                      kernel or apparmor.read_kernel())
    if reason is not None and box.apparmor == "require":
        raise HostNotSafe(f"AppArmor required (AIRLOCK_APPARMOR=require): {reason}")
    if box.apparmor != "off":
        log.info("worker.apparmor", profile=profile or None,
                 seccomp_alone=reason)
    return s.but(apparmor="require" if profile else "off")
