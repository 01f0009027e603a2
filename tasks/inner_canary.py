"""The preflight's inner-sandbox canary: on this host, an agent job's tool commands are held.

It runs where an inner-sandbox profile is configured (``Profile.inner_sandbox``): a job of that
profile, planned like any agent job (the agent seccomp profile, an unmasked /proc, the sandbox
settings Airlock writes), given a secret of its own, starts a listener on its loopback, then
runs a probe through srt with those settings (``srt --settings /etc/airlock/srt-settings.json``,
the sandbox code Claude Code uses). The probe must find: /workspace writable and the rest not,
no network interface but loopback and the job's own listener out of reach, only its own
processes, no further user namespace, and the secret nowhere (not in its environment, no
process's environ or cmdline). The outer job must see its secret (else the probe would prove
nothing). ``judge_inner`` is pure. Where the canary is not contained, the worker still starts,
and every job of an inner-sandbox profile ends with an error that says why.

The tests run the same probe with more to check (the network through the egress proxy):
``outer_code``'s arguments.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.preflight_kit import Canary, Seen, last_json

NAME = "inner_sandbox"
SECRET_NAME = "PREFLIGHT_CANARY_SECRET"  # a fresh random value for each preflight
# What the processes outside the inner sandbox run: the launcher, the job's own code, srt.
CANARY_FILE = ".airlock-inner-canary.py"
OUTSIDE_MARKS = ("/.airlock/init", CANARY_FILE, "main.py", "srt --settings")
WRITE_TARGETS = ("/workspace", "/home/appuser", "/opt/venv", "/", "/tmp", "/var/tmp", "/run")

# Runs inside the inner sandbox: reports what it can do, as JSON on its last line. Its
# arguments, a JSON object in the file argv[1] names: "needles_reversed" (the secrets,
# reversed: the probe never holds one), "listener" (the outer job's loopback port), "proxy"
# ([address, port] to dial directly), "http" ({label: url} to fetch through the sandbox's
# proxy), "write" (folders).
INNER_PROBE = r"""
import ctypes, errno, json, os, socket, sys, urllib.request, urllib.error
with open(sys.argv[1]) as f:
    args = json.load(f)
needles = [n[::-1].encode() for n in args["needles_reversed"]]
out = {"uid": os.getuid()}
def write(path):
    target = os.path.join(path, ".airlock-inner-probe")
    try:
        with open(target, "w") as f:
            f.write("x")
        os.unlink(target)
        return "written"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
out["write"] = {p: write(p) for p in args["write"]}
lines = open("/proc/self/net/dev").read().splitlines()[2:]
out["interfaces"] = sorted(line.split(":")[0].strip() for line in lines)
def dial(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__
out["listener"] = dial("127.0.0.1", args["listener"])
if args.get("proxy"):
    out["proxy_direct"] = dial(*args["proxy"])
out["http"] = {}
for label, url in args.get("http", {}).items():
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            out["http"][label] = [r.status, r.read(300).decode("utf-8", "replace")]
    except urllib.error.HTTPError as exc:
        out["http"][label] = [exc.code, exc.read(300).decode("utf-8", "replace")]
    except Exception as exc:
        out["http"][label] = [0, f"{type(exc).__name__}: {exc}"[:300]]
procs = {}
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    found = []
    for what in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as f:
                data = f.read()
            if any(needle in data for needle in needles):
                found.append(what)
        except OSError:
            pass
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode("utf-8", "replace")[:200]
    except OSError:
        cmd = "?"
    procs[pid] = {"cmd": cmd, "secret_in": found}
out["procs"] = procs
out["secret_in_env"] = sorted(k for k, v in os.environ.items()
                             if any(needle in v.encode() for needle in needles))
out["proc_environ_readable"] = sum(1 for p in procs if os.access(f"/proc/{p}/environ", os.R_OK))
libc = ctypes.CDLL(None, use_errno=True)
def unshare(flags):
    ctypes.set_errno(0)
    return 0 if libc.unshare(flags) == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
out["unshare_user"] = unshare(0x10000000)
out["unshare_net"] = unshare(0x40000000)
status = open("/proc/self/status").read().splitlines()
out["nspid"] = [line.split(":", 1)[1].split() for line in status if line.startswith("NSpid")][0]
print(json.dumps(out))
"""

# The canary job itself (outside): its secret seen, a loopback listener up, the probe run
# through srt with Airlock's settings; one JSON line: srt's exit, the probe's report.
OUTER = r"""
import json, os, socket, subprocess, sys, time
ARGS = json.loads(ARGS_JSON)
needles = [os.environ[name] for name in ARGS["secret_names"]]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
port = listener.getsockname()[1]
with open("/workspace/.airlock-inner-probe.py", "w") as f:
    f.write(PROBE)
with open("/workspace/.airlock-inner-probe.json", "w") as f:
    json.dump(dict(ARGS["probe"], needles_reversed=[n[::-1] for n in needles], listener=port), f)
t0 = time.monotonic()
try:
    done = subprocess.run(["srt", "--settings", "/etc/airlock/srt-settings.json", "python3",
                           "/workspace/.airlock-inner-probe.py", "/workspace/.airlock-inner-probe.json"],
                          capture_output=True, timeout=ARGS["timeout_s"])
    code, out, err = done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")
except (OSError, subprocess.SubprocessError) as exc:
    code, out, err = None, b"", f"{type(exc).__name__}: {exc}"
inner = None
for line in reversed(out.decode("utf-8", "replace").splitlines()):
    try:
        inner = json.loads(line)
        break
    except ValueError:
        continue
print(json.dumps({"outer_sees_secret": all(needles) and set(needles) <= set(os.environ.values()),
                  "srt_exit": code, "srt_ms": int((time.monotonic() - t0) * 1000),
                  "stderr": err[-600:], "inner": inner}))
"""


def outer_code(secret_names: tuple[str, ...] = (SECRET_NAME,), timeout_s: float = 15.0,
               **probe: Any) -> str:
    """The canary's code: the secrets it looks for, by name, how long srt may take (within
    the job's own timeout), and the probe's arguments (``write``, ``proxy``, ``http``)."""
    args = {"secret_names": list(secret_names), "timeout_s": timeout_s,
            "probe": {"write": list(WRITE_TARGETS)} | probe}
    return f"ARGS_JSON = {json.dumps(args)!r}\nPROBE = {INNER_PROBE!r}\n{OUTER}"


def canary(profile: str, secret_value: str, timeout_s: float) -> Canary:
    """The canary for one inner-sandbox profile (its image), with a fresh secret's value; run
    by python3 whatever the profile's command."""
    spec = {"files": {CANARY_FILE: outer_code(timeout_s=timeout_s * 0.75)},
            "argv": ["python3", CANARY_FILE],
            "profile": profile, "secrets": [SECRET_NAME], "limits": {"timeout_s": timeout_s}}
    return Canary(f"{NAME}[{profile}]", spec, judge_inner, {SECRET_NAME: secret_value})


def judge_inner(seen: Seen) -> str | None:
    """None when the inner sandbox held; else what it let through (or why it did not run)."""
    got = last_json(seen)
    if got is None:
        return f"the canary did not report ({seen.verdict}): {seen.stdout[-300:]!r}"
    inner = got.get("inner")
    if got.get("srt_exit") != 0 or not isinstance(inner, dict):
        return f"the inner sandbox did not start (srt exit {got.get('srt_exit')}): {got.get('stderr')!r}"
    if not got.get("outer_sees_secret"):
        return "the job did not get its secret: the probe proves nothing"
    return next((why for why in _breaches(inner) if why), None)


def _breaches(inner: dict[str, Any]) -> list[str | None]:
    writes = inner.get("write", {})
    leaked = {pid: p["secret_in"] for pid, p in inner.get("procs", {}).items() if p["secret_in"]}
    outer = sorted(p["cmd"] for p in inner.get("procs", {}).values()
                   if any(mark in p["cmd"] for mark in OUTSIDE_MARKS))
    return [
        None if writes.get("/workspace") == "written" else f"cannot write /workspace: {writes}",
        _writable(writes),
        None if inner.get("interfaces") == ["lo"] else f"interfaces {inner.get('interfaces')}",
        None if inner.get("listener") != "connected" else "reached the job's loopback listener",
        None if not leaked and not inner.get("secret_in_env") else
        f"the secret is visible inside: env {inner.get('secret_in_env')}, procs {leaked}",
        None if not outer else f"processes outside the sandbox are visible: {outer}",
        None if inner.get("unshare_user") == "EPERM" else
        f"a further user namespace: unshare {inner.get('unshare_user')}",
    ]


def _writable(writes: dict[str, str]) -> str | None:
    written = sorted(p for p, what in writes.items() if p != "/workspace" and what == "written")
    return f"writable outside /workspace: {written}" if written else None
