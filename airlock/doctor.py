"""``airlock doctor``: can this host run Airlock safely? One small function per check.

Every check returns a ``Check`` (ok, warn or fail, with a line of detail); ``run_checks``
catches whatever a check raises and reports it as a failure, so one dead service never hides
the others. Rendering is the CLI's job. The pure parts (runc versions against known container
escapes, changelog scanning) are unit-tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from base.errors import AirlockError
from config.settings import Settings
from tasks.host_checks import Check, Status, check_engine, check_runc

IO_URING_SETUP = 425  # same number on x86_64 and aarch64
SECCOMP_PROBE = (
    "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
    f"r = libc.syscall({IO_URING_SETUP}, 1, 0); print(r, ctypes.get_errno())"
)
EPERM = 1


def check_runtime(api: Any, s: Settings) -> Check:
    """The job containers' OCI runtime (AIRLOCK_RUNTIME), resolved against the engine."""
    from workers import engine

    try:
        chosen = engine.runtime_for(api, s.runtime)
    except AirlockError as exc:
        return Check("runtime", Status.FAIL, str(exc))
    how = "AIRLOCK_RUNTIME" if s.runtime else "the engine's default"
    return Check("runtime", Status.OK, f"{chosen} ({how})")


def check_cgroup() -> Check:
    from workers import cgroup

    if cgroup.is_v2():
        return Check("cgroup", Status.OK, "v2 (unified): memory peak from memory.peak")
    return Check("cgroup", Status.OK, "v1: memory peak from memory.max_usage_in_bytes")


def check_disk(s: Settings) -> Check:
    from base.errors import HostNotSafe
    from workers.storage import volumes_for

    if s.storage == "tmpfs":
        return Check("disk bound", Status.OK, "tmpfs per job: bounded, held in memory")
    try:
        volumes_for(s.storage, s.sandbox.volumes_root).check()
    except HostNotSafe as exc:
        return Check("disk bound", Status.FAIL, str(exc))
    return Check("disk bound", Status.OK, f"btrfs with quotas at {s.sandbox.volumes_root}")


def check_seccomp(api: Any, s: Settings) -> Check:
    """Run a tiny container under the profile: it must start, and a syscall the profile
    refuses (io_uring_setup) must get EPERM, not reach the kernel (EFAULT). Under the jobs'
    runtime, which compiles the profile (the engine's default if that cannot be resolved)."""
    from config.seccomp import profile_sha256
    from workers import engine
    from workers import labels as L

    image = s.profiles[s.default_profile].image
    try:
        runtime: str | None = engine.runtime_for(api, s.runtime)
    except AirlockError:
        runtime = None
    host_config = api.create_host_config(
        security_opt=["no-new-privileges:true", "seccomp=" + s.seccomp_json],
        cap_drop=["ALL"], network_mode="none", read_only=True, mem_limit=64 * 2**20,
        pids_limit=16, runtime=runtime)
    cid = api.create_container(
        image, ["python3", "-I", "-c", SECCOMP_PROBE], user=f"{s.sandbox.holder_uid}:{s.sandbox.holder_uid}",
        network_disabled=True, host_config=host_config,
        labels={L.MANAGED: "true", L.ROLE: "doctor"})["Id"]
    try:
        api.start(cid)
        code = api.wait(cid, timeout=60)["StatusCode"]
        out = api.logs(cid, stdout=True, stderr=True).decode("utf-8", "replace").strip()
    finally:
        api.remove_container(cid, force=True)
    sha = profile_sha256(s.seccomp_json)[:12]
    fields = out.split()
    if code != 0 or len(fields) != 2:
        return Check("seccomp", Status.FAIL, f"probe container exited {code}: {out[-200:]}")
    if int(fields[1]) != EPERM:
        return Check("seccomp", Status.FAIL,
                     f"profile {sha} loaded but io_uring_setup got errno {fields[1]}, not EPERM")
    return Check("seccomp", Status.OK, f"profile {sha} loads and refuses io_uring_setup (EPERM)")


def check_apparmor(s: Settings) -> Check:
    """The job containers' AppArmor profile: applied where the kernel has AppArmor and the
    profile is loaded; a kernel without it is said (seccomp then stands alone), and fails a
    host whose worker requires it."""
    from workers.apparmor import decide, read_kernel

    profile, reason = decide(s.sandbox.apparmor, s.sandbox.apparmor_profile, read_kernel())
    if reason is None:
        return Check("apparmor", Status.OK, f"profile {profile} loaded in enforce mode")
    if s.sandbox.apparmor == "require":
        return Check("apparmor", Status.FAIL, f"{reason}: AIRLOCK_APPARMOR=require refuses this host")
    return Check("apparmor", Status.WARN, f"{reason}: job containers run under seccomp alone")


def check_launcher(s: Settings) -> Check:
    """The job containers' PID 1 on this host: present, root's alone, built from this source."""
    from workers.launcher import check_binary, source_sha256

    problem = check_binary(s.sandbox.launcher_path)
    if problem:
        return Check("launcher", Status.FAIL, problem)
    return Check("launcher", Status.OK,
                 f"{s.sandbox.launcher_path} (static, from launcher.c {source_sha256()[:12]})")


def judge_egress_part(name: str, problem: str | None, ok: str, egress_enabled: bool) -> Check:
    """A part egress needs (the firewall, the networks): missing fails a host with egress
    on, and is only a warning, with the reason, while egress is off (jobs have no network)."""
    if problem is None:
        return Check(name, Status.OK, ok)
    if egress_enabled:
        return Check(name, Status.FAIL, problem)
    return Check(name, Status.WARN, f"{problem} (egress is off, AIRLOCK_EGRESS_ENABLED=false: jobs"
                 " have no network and need none; apply it before turning egress on)")


def check_firewall(s: Settings) -> Check:
    from tasks.egress import check_firewall as verify

    return judge_egress_part("firewall", verify(s), "every rule in place (scripts/firewall/verify.sh)",
                             s.egress.enabled)


def check_networks(api: Any, s: Settings) -> Check:
    from tasks.egress import network_plans
    from workers.networks import differences

    problems, seen = [], []
    for plan in network_plans(s):
        found = [n for n in api.networks(names=[plan.name]) if n["Name"] == plan.name]
        if not found:
            problems.append(f"{plan.name} missing")
            continue
        diff = differences(plan, api.inspect_network(found[0]["Id"]))
        if diff:
            problems.append(f"{plan.name}: {', '.join(diff)}")
        seen.append(f"{plan.name} {plan.subnet}")
    return judge_egress_part("networks", "; ".join(problems) or None, ", ".join(seen),
                             s.egress.enabled)


def check_images(api: Any, s: Settings) -> Check:
    import docker.errors

    present, missing = [], []
    for image in sorted({p.image for p in s.profiles.values()}):
        try:
            info = api.inspect_image(image)
            present.append(f"{image} ({info['Id'][7:19]}, {info['Size'] // 10**6} MB)")
        except docker.errors.NotFound:
            missing.append(image)
    if missing:
        return Check("sandbox image", Status.FAIL,
                     f"missing {', '.join(missing)}: run scripts/build-images.sh")
    return Check("sandbox image", Status.OK, ", ".join(present))


def _where(url: str) -> str:
    from sqlalchemy.engine import make_url

    if url.startswith("sentinel://"):
        from tasks.streams import sentinels

        found = sentinels(url)
        return "Sentinels " + ",".join(f"{h}:{p}" for h, p in found.hosts) + f"/{found.db}"

    u = make_url(url.replace("redis://", "postgresql://", 1) if url.startswith("redis") else url)
    return f"{u.host}:{u.port or ''}/{u.database or ''}"  # never the password


def judge_redis_memory(maxmemory: int, policy: str) -> tuple[Status, str]:
    """Redis holds the queue: a bound on its memory, and no policy that evicts keys without an
    expiry (the broker's queue and unacknowledged messages), or a flood of output fills the
    host, or loses jobs. ``volatile-*`` evicts only keys with an expiry (ended streams)."""
    if maxmemory <= 0:
        return Status.WARN, ("no maxmemory: Redis may grow until the host runs out; set one, e.g."
                             " --maxmemory 1gb --maxmemory-policy volatile-lru (docs/operations.md)")
    if policy.startswith("allkeys"):
        return Status.WARN, (f"maxmemory-policy {policy} may evict the broker's queue: use"
                             " volatile-lru or noeviction (docs/operations.md)")
    return Status.OK, f"maxmemory {maxmemory // 2**20} MiB, policy {policy}"


def check_redis(url: str, sentinel_master: str = "airlock") -> Check:
    from tasks.streams import connect

    r = connect(url, sentinel_master)
    try:
        server, memory = r.info("server"), r.info("memory")
    finally:
        r.close()
    status, detail = judge_redis_memory(int(memory.get("maxmemory", 0)),
                                        str(memory.get("maxmemory_policy", "")))
    return Check("redis", status,
                 f"Redis {server.get('redis_version')} at {_where(url)}; {detail}")


def check_postgres(url: str) -> Check:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar()
    finally:
        engine.dispose()
    return Check("postgresql", Status.OK, f"PostgreSQL {version} at {_where(url)}")


def check_migrations(url: str) -> Check:
    from tasks.migrate import current_and_head

    current, head = current_and_head(url)
    if current is None:
        return Check("migrations", Status.FAIL, f"no schema (head is {head}): run airlock db upgrade")
    if current != head:
        return Check("migrations", Status.FAIL, f"at {current}, head is {head}: run airlock db upgrade")
    return Check("migrations", Status.OK, f"at head {head}")


# --- running them -------------------------------------------------------------------------

def _guard(name: str, check: Callable[[], Check]) -> Check:
    """The one boundary where any error of a check becomes that check's failure."""
    try:
        return check()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return Check(name, Status.FAIL, f"{type(exc).__name__}: {text[0] if text else ''}"[:300])


def run_checks(s: Settings, accepted: Iterable[str] = ()) -> list[Check]:
    """Every check, in order; those needing the engine fail with its error when it is away."""
    from workers import engine

    allowed = {*s.allow_known_cves, *accepted}
    api: Any = None
    error: Exception | None = None
    try:
        api = engine.connect(s.docker_host, timeout=30)
    except Exception as exc:
        error = exc

    def docker(fn: Callable[[Any], Check]) -> Callable[[], Check]:
        return lambda: fn(api) if error is None else _raise(error)

    checks: list[tuple[str, Callable[[], Check]]] = [
        ("docker engine", docker(check_engine)),
        ("runc", docker(lambda a: check_runc(a, allowed))),
        ("runtime", docker(lambda a: check_runtime(a, s))),
        ("cgroup", check_cgroup),
        ("disk bound", lambda: check_disk(s)),
        ("seccomp", docker(lambda a: check_seccomp(a, s))),
        ("apparmor", lambda: check_apparmor(s)),
        ("launcher", lambda: check_launcher(s)),
        ("firewall", lambda: check_firewall(s)),
        ("networks", docker(lambda a: check_networks(a, s))),
        ("sandbox image", docker(lambda a: check_images(a, s))),
        ("redis", lambda: check_redis(s.redis_url, s.sentinel_master)),
        ("postgresql", lambda: check_postgres(s.database_url)),
        ("migrations", lambda: check_migrations(s.database_url)),
    ]
    try:
        return [_guard(name, fn) for name, fn in checks]
    finally:
        if api is not None:
            api.close()


def _raise(exc: Exception) -> Check:
    raise exc


def failed(checks: Iterable[Check]) -> bool:
    return any(c.status is Status.FAIL for c in checks)
