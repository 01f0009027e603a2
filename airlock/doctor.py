"""``airlock doctor``: can this host run Airlock safely? One small function per check.

Every check returns a ``Check`` (ok, warn or fail, with a line of detail); ``run_checks``
catches whatever a check raises and reports it as a failure, so one dead service never hides
the others. Rendering is the CLI's job. The pure parts (runc versions against known container
escapes, changelog scanning) are unit-tested.
"""

from __future__ import annotations

import enum
import gzip
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from airlock.errors import AirlockError
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIREWALL_VERIFY = ROOT / "scripts" / "firewall" / "verify.sh"
DEBIAN_CHANGELOG = Path("/usr/share/doc/runc/changelog.Debian.gz")
IO_URING_SETUP = 425  # same number on x86_64 and aarch64
SECCOMP_PROBE = (
    "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
    f"r = libc.syscall({IO_URING_SETUP}, 1, 0); print(r, ctypes.get_errno())"
)
EPERM = 1


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": str(self.status), "detail": self.detail}


# --- runc versions (pure) -----------------------------------------------------------------

FINAL = 10**9  # sorts a release after all of its release candidates


class RuncVersion(NamedTuple):
    major: int
    minor: int
    patch: int
    rc: int = FINAL

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return base if self.rc == FINAL else f"{base}-rc{self.rc}"


@dataclass(frozen=True, slots=True)
class KnownCve:
    cve: str
    fixed_in: tuple[RuncVersion, ...]  # the first fixed release of each maintained line
    summary: str
    # "job": a process inside a container can use it; "image": it takes a crafted image or
    # container configuration at creation, which Airlock's jobs never choose (the operator's
    # allowlisted images, Airlock's own create arguments, nothing exec'd into a container).
    reach: str = "job"

    def affects(self, version: RuncVersion) -> bool:
        """Older than every fix, or on a line whose fix came later than this version."""
        for fixed in sorted(self.fixed_in):
            if version < fixed:
                return True
            if (version.major, version.minor) == (fixed.major, fixed.minor):
                return False
        return False


KNOWN_RUNC_CVES = (
    KnownCve("CVE-2019-5736", (RuncVersion(1, 0, 0, 7),),
             "a container process can overwrite the host's runc binary"),
    KnownCve("CVE-2024-21626", (RuncVersion(1, 1, 12),),
             "leaked fd: a container's working directory in the host filesystem"),
    # The runc advisories of 5 November 2025: races on the mounts runc makes while it creates a
    # container, steered by the image's own files (symlinks at /dev/null, /dev/console, /proc).
    KnownCve("CVE-2025-31133", (RuncVersion(1, 2, 8), RuncVersion(1, 3, 3), RuncVersion(1, 4, 0, 3)),
             "masked paths redirected by a crafted image: host files writable", reach="image"),
    KnownCve("CVE-2025-52565", (RuncVersion(1, 2, 8), RuncVersion(1, 3, 3), RuncVersion(1, 4, 0, 3)),
             "/dev/console bind-mount redirected by a crafted image", reach="image"),
    KnownCve("CVE-2025-52881", (RuncVersion(1, 2, 8), RuncVersion(1, 3, 3), RuncVersion(1, 4, 0, 3)),
             "procfs writes redirected during creation: LSM labels and sysctls bypassed",
             reach="image"),
)
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-~.]?rc\.?(\d+))?")


def parse_runc_version(text: str) -> RuncVersion | None:
    """``1.1.5+ds1``, ``1.0.0-rc92``, ``1.0-rc7``, ``1.0.0~rc93+ds1``, ``v1.1.12``, …"""
    found = _VERSION.search(text)
    if found is None:
        return None
    major, minor, patch, rc = found.groups()
    return RuncVersion(int(major), int(minor), int(patch or 0), int(rc) if rc else FINAL)


def open_cves(version: RuncVersion) -> list[KnownCve]:
    """The known escapes this version predates the fix of."""
    return [known for known in KNOWN_RUNC_CVES if known.affects(version)]


def cves_in_changelog(text: str) -> set[str]:
    return set(re.findall(r"CVE-\d{4}-\d{4,}", text))


def judge_runc(version_text: str, backported: Iterable[str] = (),
               accepted: Iterable[str] = (), package: str = "") -> Check:
    """Fail on a known container escape nobody patched or accepted; warn on a patched or
    accepted one (the version number alone cannot show a distribution's backport)."""
    version = parse_runc_version(version_text)
    if version is None:
        return Check("runc", Status.WARN, f"cannot read the runc version from {version_text!r}")
    backported, accepted = set(backported), set(accepted)
    notes, unresolved = [], []
    for known in open_cves(version):
        fixes = "/".join(str(v) for v in known.fixed_in)
        where = f"{known.cve} (fixed in {fixes}: {known.summary})"
        if known.cve in backported:
            notes.append(f"{where}: patched by the distribution's package {package}".rstrip())
        elif known.cve in accepted:
            notes.append(f"{where}: accepted by the operator")
        elif known.reach == "image":
            notes.append(f"{where}: needs a crafted image or configuration, which jobs do not"
                         " choose; upgrade runc all the same")
        else:
            unresolved.append(where)
    if unresolved:
        hint = "upgrade runc, or accept with --allow-known-cve after reading docs/operations.md"
        also = f"; it also predates {'; '.join(notes)}" if notes else ""
        return Check("runc", Status.FAIL,
                     f"runc {version_text} is vulnerable to {'; '.join(unresolved)}; {hint}{also}")
    if notes:
        return Check("runc", Status.WARN, f"runc {version_text} predates {'; '.join(notes)}")
    fixed = ", ".join(known.cve for known in KNOWN_RUNC_CVES)
    return Check("runc", Status.OK, f"runc {version_text} (has the fixes for {fixed})")


# --- checks (I/O) -------------------------------------------------------------------------

def _runc_component(version: dict[str, Any]) -> tuple[str, str]:
    for component in version.get("Components") or []:
        if component.get("Name") == "runc":
            return str(component.get("Version", "")), str(
                (component.get("Details") or {}).get("GitCommit", ""))
    return "", ""


def distro_backports(package_version: str, changelog: Path = DEBIAN_CHANGELOG) -> set[str]:
    """CVEs the host's Debian runc package says it fixed, when the engine runs that package."""
    if not package_version:
        return set()
    try:
        installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "runc"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
        text = gzip.decompress(changelog.read_bytes()).decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return set()
    return cves_in_changelog(text) if installed == package_version else set()


def check_engine(api: Any) -> Check:
    v = api.version()
    return Check("docker engine", Status.OK,
                 f"Docker {v.get('Version')} (API {v.get('ApiVersion')}), {v.get('Os')}/"
                 f"{v.get('Arch')}, kernel {v.get('KernelVersion')}")


def check_runc(api: Any, accepted: Iterable[str]) -> Check:
    version, package = _runc_component(api.version())
    if not version:
        return Check("runc", Status.WARN, "the engine does not report its runc version")
    return judge_runc(version, distro_backports(package), accepted, package)


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
    from airlock.errors import HostNotSafe
    from workers.storage import volumes_for

    if s.storage == "tmpfs":
        return Check("disk bound", Status.OK, "tmpfs per job: bounded, held in memory")
    try:
        volumes_for(s.storage, s.volumes_root, s.job_uid, s.job_gid).check()
    except HostNotSafe as exc:
        return Check("disk bound", Status.FAIL, str(exc))
    return Check("disk bound", Status.OK, f"btrfs with quotas at {s.volumes_root}")


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
        image, ["python3", "-I", "-c", SECCOMP_PROBE], user=f"{s.job_uid}:{s.job_gid}",
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


def check_launcher(s: Settings) -> Check:
    """The job containers' PID 1 on this host: present, root's alone, built from this source."""
    from workers.launcher import check_binary, source_sha256

    problem = check_binary(s.launcher_path)
    if problem:
        return Check("launcher", Status.FAIL, problem)
    return Check("launcher", Status.OK,
                 f"{s.launcher_path} (static, from launcher.c {source_sha256()[:12]})")


def check_firewall(script: Path = FIREWALL_VERIFY) -> Check:
    if not script.exists():
        return Check("firewall", Status.FAIL, f"{script} not found")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        problems = [line for line in lines if "FAIL" in line] or lines[-1:]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Check("firewall", Status.FAIL, f"{problems[0] if problems else 'failed'}{more}")
    return Check("firewall", Status.OK, lines[-1] if lines else "rules verified")


def check_networks(api: Any) -> Check:
    from workers.networks import BACKEND, EGRESS, WORKSPACE, differences

    problems, seen = [], []
    for plan in (BACKEND, WORKSPACE, EGRESS):
        found = [n for n in api.networks(names=[plan.name]) if n["Name"] == plan.name]
        if not found:
            problems.append(f"{plan.name} missing")
            continue
        diff = differences(plan, api.inspect_network(found[0]["Id"]))
        if diff:
            problems.append(f"{plan.name}: {', '.join(diff)}")
        seen.append(f"{plan.name} {plan.subnet}")
    if problems:
        return Check("networks", Status.FAIL, "; ".join(problems))
    return Check("networks", Status.OK, ", ".join(seen))


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

    u = make_url(url.replace("redis://", "postgresql://", 1) if url.startswith("redis") else url)
    return f"{u.host}:{u.port or ''}/{u.database or ''}"  # never the password


def check_redis(url: str) -> Check:
    from tasks.streams import connect

    r = connect(url)
    try:
        version = r.info("server").get("redis_version")
    finally:
        r.close()
    return Check("redis", Status.OK, f"Redis {version} at {_where(url)}")


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
        ("launcher", lambda: check_launcher(s)),
        ("firewall", check_firewall),
        ("networks", docker(check_networks)),
        ("sandbox image", docker(lambda a: check_images(a, s))),
        ("redis", lambda: check_redis(s.redis_url)),
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
