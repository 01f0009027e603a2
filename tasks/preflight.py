"""The preflight self-test: before a worker takes jobs, prove on this host that a job is held.

A handful of canary jobs run through the runner exactly as real jobs do (same plan, same
launcher, same seccomp profile, same storage), not through the queue, in parallel threads:
a denied syscall, a memory bomb, a fork bomb, a write to the read-only root and a disk fill;
with egress enabled, also a job on the workspace network that must reach the proxy and nothing
else, and scripts/firewall/verify.sh must pass (tasks/egress.py).
Each canary's judge is a pure function of what the runner saw; ``run`` returns a
``PreflightResult`` and ``start_worker`` refuses to start unless every canary was contained.
The last result stays available (``last_result``) for the metrics endpoint.

The runtime check reports the engine's Docker and runc versions against known container
escapes (``tasks.host_checks``); ``runtime_cve_policy`` decides whether an unpatched one refuses
the start (``refuse``) or is logged (``warn``, the default: see docs/attacks.md).

First of all, the launcher (every job container's PID 1, ``Settings.sandbox.launcher_path``) must be a
root-owned executable built from this package's ``workers/launcher.c``; if not, the preflight
fails at once, naming the fix (scripts/build-launcher.sh), and no canary runs.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid

import structlog

from config.seccomp import profile_sha256
from config.settings import Settings
from tasks import inner_canary, planning
from tasks.context import host_slots
from tasks.contract import resolve
from tasks.host_checks import check_engine, check_runc
from tasks.planning import HostFacts
from tasks.preflight_kit import Canary, CanaryResult, PreflightResult, Seen, last_json
from workers import engine, launcher, runner
from workers.slots import Slots
from workers.storage import Volumes, volumes_for
from workers.verdict import Verdict

log = structlog.get_logger(__name__)
MiB = 1024**2
EPERM, EAGAIN, EROFS, ENOSPC, EDQUOT = 1, 11, 30, 28, 122
CANARY_TIMEOUT_S = 20.0

# --- the canaries' code (runs inside the job container) -------------------------------------

# A raw system call's errno (0: it ran), for the canaries' code (and the attack suite's).
ERRNO_OF = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def errno_of(nr, *args):
    ctypes.set_errno(0)
    a = [ctypes.c_long(x) if isinstance(x, int) else x for x in args]
    return 0 if libc.syscall(ctypes.c_long(nr), *a) != -1 else ctypes.get_errno()
"""

SYSCALLS = ERRNO_OF + r"""
fd = os.open("/workspace", os.O_RDONLY)
arg = ctypes.create_string_buffer(b"airlock-preflight", 4096)
# Read first: a user namespace made below (the agent profile admits one) holds every capability.
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
refused = {
    "mount": errno_of(165, b"none", b"/tmp", b"tmpfs", 0, None),
    "io_uring_setup": errno_of(425, 1, None),
    "bpf": errno_of(321, 0, None, 0),
    "keyctl": errno_of(250, 0, -1, 0),
    "socket_af_alg": errno_of(41, 38, 5, 0),
    "btrfs_subvol_create": errno_of(16, fd, 0x5000940E, arg),
    "unshare_newuser": errno_of(272, 0x10000000),
}
print(json.dumps({"refused": refused, "seccomp": status["Seccomp"].strip(),
                  "no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": status["CapEff"].strip()}))
"""

MEMORY_BOMB = "b = bytearray(1 << 30)\nprint('not contained')\n"

FORK_BOMB = r"""
import os, time
n = 0
try:
    while n < 4096:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as exc:
    print(n, exc.errno)
    raise SystemExit(3)
print(n, 0)
"""

READ_ONLY_ROOT = r"""
import json
out = {}
for path in ("/airlock-preflight", "/etc/airlock-preflight", "/usr/bin/airlock-preflight"):
    try:
        open(path, "w").close()
        out[path] = 0
    except OSError as exc:
        out[path] = exc.errno
print(json.dumps(out))
"""

DISK_FILL = r"""
written, err, chunk = 0, 0, b"\0" * (1 << 20)
try:
    with open("/workspace/fill", "wb", buffering=0) as f:
        while written < {cap}:
            written += f.write(chunk)
except OSError as exc:
    err = exc.errno
print(written, err)
raise SystemExit(1 if err else 0)
"""

# With egress enabled (ARGS prepended): from the workspace network, every target must be
# refused while the proxy, the positive control, answers (else the probe proves nothing).
EGRESS_BLOCKED = r"""
import json, socket
from concurrent.futures import ThreadPoolExecutor
def attempt(target):
    try:
        socket.create_connection((target[0], target[1]), timeout=3).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
with ThreadPoolExecutor(16) as pool:
    got = dict(zip(ARGS, pool.map(attempt, ARGS.values())))
print(json.dumps(got))
"""
EGRESS_TARGETS = {  # metadata services, private ranges (stand-ins own these in the tests)
    "metadata": ("169.254.169.254", 80), "ecs-metadata": ("169.254.170.2", 80),
    "alibaba-metadata": ("100.100.100.200", 80), "azure-wireserver": ("168.63.129.16", 80),
    "private-10": ("10.99.0.10", 80), "private-172": ("172.31.254.10", 80),
    "private-192": ("192.168.254.10", 80), "cgnat": ("100.64.0.10", 80),
}


# What the agent seccomp profile admits of the canary's calls (config/agent_seccomp.py): a fleet
# whose default profile has an inner sandbox runs its canaries under that profile.
INNER_ADMITS = frozenset({"unshare_newuser"})


def judge_syscalls(seen: Seen, admitted: frozenset[str] = frozenset()) -> str | None:
    got = last_json(seen)
    if seen.verdict is not Verdict.OK or got is None:
        return f"the probe did not report ({seen.verdict}): {seen.stdout[-200:]!r}"
    allowed = {k: v for k, v in got["refused"].items() if v != EPERM and k not in admitted}
    if allowed:
        return f"not refused with EPERM (errno, 0 = it ran): {allowed}"
    if got["seccomp"] != "2" or got["no_new_privs"] != "1":
        return f"Seccomp {got['seccomp']}, NoNewPrivs {got['no_new_privs']} (want 2 and 1)"
    if int(got["cap_eff"], 16) != 0:
        return f"the job holds capabilities: CapEff {got['cap_eff']}"
    return None


def judge_memory(seen: Seen, limit: int) -> str | None:
    if seen.verdict is not Verdict.OOM:
        return f"verdict {seen.verdict}, not oom: {seen.stdout[-200:]!r}"
    peak = seen.peak_memory_bytes
    if peak is not None and peak > limit + MiB:
        return f"peak memory {peak} is over the {limit}-byte limit"
    return None


def judge_fork(seen: Seen, limit: int) -> str | None:
    words = seen.stdout.split()
    if len(words) != 2 or not all(w.isdigit() for w in words):
        return f"verdict {seen.verdict}, no fork count: {seen.stdout[-200:]!r}"
    forked, errno = int(words[0]), int(words[1])
    if errno != EAGAIN or forked >= limit:
        return f"{forked} forks succeeded under a cap of {limit} (errno {errno})"
    if seen.verdict is not Verdict.PIDS_LIMIT or not seen.evidence.get("pids_capped"):
        return f"cap held but not recorded: verdict {seen.verdict}, evidence {seen.evidence}"
    return None


def judge_read_only(seen: Seen) -> str | None:
    got = last_json(seen)
    if got is None:
        return f"verdict {seen.verdict}, no report: {seen.stdout[-200:]!r}"
    writable = {path: errno for path, errno in got.items() if errno != EROFS}
    return f"not refused as read-only (errno, 0 = written): {writable}" if writable else None


def judge_disk(seen: Seen, limit: int, storage: str) -> str | None:
    words = seen.stdout.split()
    if len(words) != 2 or not all(w.isdigit() for w in words):
        return f"verdict {seen.verdict}, no byte count: {seen.stdout[-200:]!r}"
    written, errno = int(words[0]), int(words[1])
    if errno not in (EDQUOT, ENOSPC) or written > limit:
        return f"{written} bytes written under a {limit}-byte bound (errno {errno})"
    if storage == "btrfs" and seen.verdict is not Verdict.DISK_LIMIT:
        return f"bound held but not recorded: verdict {seen.verdict}, evidence {seen.evidence}"
    return None


def canaries(s: Settings) -> list[Canary]:
    memory, pids, disk = 64 * MiB, 32, max(16 * MiB, s.minimums.disk_bytes)
    admitted = INNER_ADMITS if s.profiles[s.default_profile].inner_sandbox else frozenset()
    limits = {"timeout_s": CANARY_TIMEOUT_S}
    return [
        Canary("denied_syscalls", {"code": SYSCALLS, "limits": limits},
               lambda seen: judge_syscalls(seen, admitted)),
        Canary("memory_bomb", {"code": MEMORY_BOMB, "limits": limits | {"memory_bytes": memory}},
               lambda seen: judge_memory(seen, memory)),
        Canary("fork_bomb", {"code": FORK_BOMB, "limits": limits | {"pids": pids}},
               lambda seen: judge_fork(seen, pids)),
        Canary("read_only_root", {"code": READ_ONLY_ROOT, "limits": limits}, judge_read_only),
        Canary("disk_fill", {"code": DISK_FILL.replace("{cap}", str(4 * disk)),
                             "limits": limits | {"disk_bytes": disk}},
               lambda seen: judge_disk(seen, disk, s.storage)),
        *egress_canaries(s),
    ]


def egress_canaries(s: Settings) -> list[Canary]:
    """With egress enabled: a job on the workspace network reaches the proxy and nothing else
    (metadata, private ranges, the host through the bridge gateway, the backend)."""
    if not s.egress.enabled:
        return []
    from tasks.egress import network_plans

    backend, workspace, _ = network_plans(s)
    targets = dict(EGRESS_TARGETS) | {"proxy": (s.egress.proxy_ip, s.egress.proxy_port)}
    for port in (22, 2375, 5432, 5555, 6379):
        targets[f"gateway:{port}"] = (workspace.gateway, port)
        targets[f"backend:{port}"] = (backend.gateway, port)
    code = f"ARGS = {targets!r}\n{EGRESS_BLOCKED}"
    spec = {"code": code, "network": "egress", "limits": {"timeout_s": CANARY_TIMEOUT_S}}
    return [Canary("egress_blocked", spec, judge_egress)]


def inner_canaries(s: Settings) -> dict[str, Canary]:
    """Where profiles have an inner sandbox: one canary for each of their images
    (tasks/inner_canary.py), by the profiles it stands for."""
    by_image = {s.profiles[name].image: name for name in reversed(s.inner_sandbox_profiles)}
    made = {image: inner_canary.canary(name, secrets.token_urlsafe(24), CANARY_TIMEOUT_S)
            for image, name in by_image.items()}
    return {name: made[s.profiles[name].image] for name in s.inner_sandbox_profiles}


def judge_egress(seen: Seen) -> str | None:
    got = last_json(seen)
    if seen.verdict is not Verdict.OK or got is None:
        return f"the probe did not report ({seen.verdict}): {seen.stdout[-200:]!r}"
    if got.get("proxy") != "connected":
        return f"the egress proxy did not answer ({got.get('proxy')}): the probe proves nothing"
    reached = sorted(name for name, what in got.items() if name != "proxy" and what == "connected")
    return f"reached from the workspace network: {reached}" if reached else None


# --- results ----------------------------------------------------------------------------------

def judge_runtime(status: str, detail: str, policy: str) -> str:
    """The runtime check's line: a failed check refuses only under the ``refuse`` policy."""
    if status == "fail":
        return f"{'refuse' if policy == 'refuse' else 'warn'}: {detail}"
    return f"{status}: {detail}"


_last: PreflightResult | None = None
_last_lock = threading.Lock()


def last_result() -> PreflightResult | None:
    """The latest preflight of this process (None before the first): for the metrics gauge."""
    with _last_lock:
        return _last


# --- running them (I/O) ---------------------------------------------------------------------

def _run_canary(s: Settings, host: HostFacts, volumes: Volumes, slots: Slots,
                canary: Canary) -> CanaryResult:
    t0 = time.monotonic()
    try:
        _, job = resolve(canary.spec, s)
        api = engine.connect(s.docker_host)
        try:
            name = f"airlock-preflight-{re.sub('[^a-z0-9]', '', canary.name)}-{uuid.uuid4().hex[:6]}"
            now = time.time()
            plan = planning.plan_for(s, host, job, name=name, uid=slots.take(name, now).uid,
                                     now=now, role="preflight")
            sandbox = runner.prepare(api, plan, volumes, slots)
            try:
                payload = planning.payload_for(job, s, canary.secrets)
                outcome = runner.run(sandbox, payload, job.limits, keep_bytes=64 * 1024,
                                     volumes=volumes)
            finally:
                runner.destroy(sandbox, volumes)
        finally:
            api.close()
        seen = Seen.from_outcome(outcome)
        why = canary.judge(seen)
        return CanaryResult(canary.name, why is None, why or "contained", str(seen.verdict),
                            time.monotonic() - t0)
    except Exception as exc:  # a canary that cannot run proves nothing: not contained
        return CanaryResult(canary.name, False, f"could not run: {type(exc).__name__}: {exc}",
                            "error", time.monotonic() - t0)


def _firewall(s: Settings) -> dict[str, str]:
    """With egress enabled: scripts/firewall/verify.sh must pass, or the worker refuses. A
    worker in a container (``proxy_managed=external``, docker-compose.yml) cannot read the
    host's rules: the operator's step on the host verifies them (docs/network.md), and the
    egress canary probes them from a job either way."""
    if not s.egress.enabled:
        return {}
    if s.egress.proxy_managed == "external":
        return {"firewall": "ok: verified on the host (scripts/firewall/verify.sh before"
                            " docker-compose up); the egress canary probes it from a job"}
    from tasks.egress import check_firewall

    problem = check_firewall(s)
    return {"firewall": f"refuse: {problem}" if problem else "ok: every rule in place"}


def launcher_check(s: Settings) -> dict[str, str]:
    """The launcher binary bound into every job container: present, root's, not stale."""
    problem = launcher.check_binary(s.sandbox.launcher_path)
    return {"launcher": f"refuse: {problem}" if problem else f"ok: {s.sandbox.launcher_path}"}


def runtime_check(s: Settings) -> dict[str, str]:
    try:
        api = engine.connect(s.docker_host)
        try:
            checks = [check_engine(api), check_runc(api, s.allow_known_cves)]
        finally:
            api.close()
    except Exception as exc:
        return {"runtime": judge_runtime("fail", f"cannot check: {exc}", s.sandbox.runtime_cve_policy)}
    return {c.name: judge_runtime(str(c.status), c.detail, s.sandbox.runtime_cve_policy) for c in checks}


def run(s: Settings) -> PreflightResult:
    """Run every canary at once and the runtime check; remember and return the result."""
    t0 = time.monotonic()
    init = launcher_check(s)
    if init["launcher"].startswith("refuse"):
        return _remember(PreflightResult(False, (), init, time.monotonic() - t0))
    host = HostFacts(s.seccomp_json, profile_sha256(s.seccomp_json), s.runtime,
                     agent_seccomp_json=planning.agent_seccomp(s))
    volumes = volumes_for(s.storage, s.sandbox.volumes_root)
    slots = _slots(s)
    results: dict[str, CanaryResult] = {}
    inner = inner_canaries(s)
    todo = canaries(s) + list({id(c): c for c in inner.values()}.values())

    def one(canary: Canary) -> None:
        results[canary.name] = _run_canary(s, host, volumes, slots, canary)

    threads = [threading.Thread(target=one, args=(c,), name=f"preflight-{c.name}") for c in todo]
    for t in threads:
        t.start()
    runtime = init | runtime_check(s) | _firewall(s)
    for t in threads:
        t.join()
    done = tuple(results[c.name] for c in todo if c not in inner.values())
    held = {profile: results[c.name] for profile, c in inner.items()}
    return _remember(PreflightResult(all(c.contained for c in done) and
                                     not any(v.startswith("refuse") for v in runtime.values()),
                                     done, runtime, time.monotonic() - t0, held))


def inner_refusal(profile: str) -> str | None:
    """Why this worker refuses jobs of an inner-sandbox profile (its preflight's canary was not
    contained, or never ran here); None when the inner sandbox held."""
    result = last_result()
    if result is None:
        return "no preflight ran in this worker"
    return result.inner_refusal(profile)


def _slots(s: Settings) -> Slots:
    api = engine.connect(s.docker_host)
    try:
        return host_slots(s, engine.engine_id(api))
    finally:
        api.close()


def _remember(result: PreflightResult) -> PreflightResult:
    global _last
    with _last_lock:
        _last = result
    log.info("preflight", ok=result.ok, seconds=round(result.seconds, 2),
             canaries={c.name: c.detail if not c.contained else round(c.seconds, 2)
                       for c in (*result.canaries, *result.inner.values())},
             runtime=result.runtime)
    return result
