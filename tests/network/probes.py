"""Network probes, as Python source to run inside a job container (A19-A22).

Each probe is plain job code: it reads its arguments from a global ``ARGS`` dict that
``job_code`` prepends, and prints one JSON document. Probes report what happened and
never decide; the tests decide. They use raw sockets (no proxy) unless the probe is
about the proxy, and every network call has a short timeout.

    source = job_code(TCP_CONNECT, targets=[["metadata", "169.254.169.254", 80]])
"""

from __future__ import annotations

import json
from typing import Any

# Metadata service spellings that libc and Python resolve to 169.254.169.254.
METADATA_FORMS = (
    "169.254.169.254",
    "2852039166",            # decimal
    "0xA9FEA9FE",            # hex
    "0251.0376.0251.0376",   # octal, dotted
    "::ffff:169.254.169.254",  # IPv4-mapped IPv6
)


def job_code(probe: str, **args: Any) -> str:
    """The probe with its arguments: a ready-to-run job body."""
    return f"ARGS = {args!r}\n{probe}"


def report(stdout: str) -> dict[str, Any]:
    """Every JSON document a job printed (one per probe, one a line), merged."""
    merged: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            merged |= json.loads(line)
    return merged


# targets: [[name, host, port], ...]; timeout: seconds per attempt.
# Outcome per target: "connected" (isolation broken) or the error and how long it took.
TCP_CONNECT = r'''
import json, socket, time
from concurrent.futures import ThreadPoolExecutor

def attempt(host, port, timeout):
    start = time.monotonic()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return {"outcome": "unresolved", "error": str(exc), "s": time.monotonic() - start}
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        return {"outcome": "connected", "address": str(address[0]), "s": time.monotonic() - start}
    except OSError as exc:
        return {"outcome": type(exc).__name__, "error": str(exc), "address": str(address[0]),
                "s": time.monotonic() - start}
    finally:
        sock.close()

timeout = ARGS.get("timeout", 3.0)
with ThreadPoolExecutor(16) as pool:
    futures = {name: pool.submit(attempt, host, port, timeout) for name, host, port in ARGS["targets"]}
print(json.dumps({name: future.result() for name, future in futures.items()}))
'''

# targets: [[name, host], ...]: one DNS query each to host:53/udp; "answered" if any
# datagram comes back (isolation broken), otherwise the error.
UDP_SEND = r'''
import json, socket, time
from concurrent.futures import ThreadPoolExecutor

QUERY = bytes.fromhex("a1a1010000010000000000000570726f6265076578616d706c650000010001")

def attempt(host, timeout):
    start = time.monotonic()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, 53))  # connected: an ICMP refusal surfaces as an error
        sock.send(QUERY)
        sock.recv(512)
        return {"outcome": "answered", "s": time.monotonic() - start}
    except OSError as exc:
        return {"outcome": type(exc).__name__, "error": str(exc), "s": time.monotonic() - start}
    finally:
        sock.close()

timeout = ARGS.get("timeout", 2.0)
with ThreadPoolExecutor(16) as pool:
    futures = {name: pool.submit(attempt, host, timeout) for name, host in ARGS["targets"]}
print(json.dumps({name: future.result() for name, future in futures.items()}))
'''

# names: host names to resolve with the system resolver (Docker's 127.0.0.11).
# Outcome per name: "resolved" with addresses (isolation broken) or the error, timed.
DNS_LOOKUP = r'''
import json, socket, time
from concurrent.futures import ThreadPoolExecutor

def lookup(name):
    start = time.monotonic()
    try:
        found = sorted({i[4][0] for i in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)})
        return {"outcome": "resolved", "addresses": found, "s": time.monotonic() - start}
    except OSError as exc:
        return {"outcome": "failed", "error": str(exc), "s": time.monotonic() - start}

with ThreadPoolExecutor(16) as pool:
    futures = {name: pool.submit(lookup, name) for name in ARGS["names"]}
print(json.dumps({name: future.result() for name, future in futures.items()}))
'''

# requests: [[label, method, url], ...] sent through the proxy from the job's environment
# (HTTPS_PROXY, SSL_CERT_FILE, ...). Outcome: HTTP status, the start of the body, timing.
PROXY_REQUEST = r'''
import json, time, urllib.error, urllib.request

def send(method, url, timeout):
    start = time.monotonic()
    body = b"probe=1" if method in ("POST", "PUT", "PATCH") else None
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"status": response.status, "body": response.read(200).decode("utf-8", "replace"),
                    "s": time.monotonic() - start}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read(600).decode("utf-8", "replace"),
                "s": time.monotonic() - start}
    except (OSError, ValueError) as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}", "s": time.monotonic() - start}

timeout = ARGS.get("timeout", 20.0)
print(json.dumps({label: send(method, url, timeout) for label, method, url in ARGS["requests"]}))
'''

# package: a small PyPI distribution to fetch with pip through the proxy.
PIP_DOWNLOAD = r'''
import json, os, subprocess, sys, tempfile, time

start = time.monotonic()
with tempfile.TemporaryDirectory() as target:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "--progress-bar", "off", "-d", target, ARGS["package"]],
        capture_output=True, text=True, timeout=ARGS.get("timeout", 120),
    )
    files = sorted(os.listdir(target))
print(json.dumps({"returncode": done.returncode, "files": files, "s": time.monotonic() - start,
                  "tail": (done.stdout + done.stderr)[-800:]}))
'''

# A second job on the same network: listen on ARGS["port"] for ARGS["seconds"], then
# report how many connections arrived (any at all means jobs can reach each other).
PEER_LISTEN = r'''
import json, socket, time

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", ARGS["port"]))
server.listen(16)
server.settimeout(0.2)
print("listening", flush=True)
accepted, deadline = 0, time.monotonic() + ARGS["seconds"]
while time.monotonic() < deadline:
    try:
        conn, _ = server.accept()
        accepted += 1
        conn.close()
    except socket.timeout:
        pass
print(json.dumps({"accepted": accepted}))
'''

# The job's network interfaces and routes as the kernel lists them, and what a connect to
# each target does (a job without egress must have loopback only: "Network is unreachable").
INTERFACES = r'''
import json, socket, time
names = sorted(name for _, name in socket.if_nameindex())
routes = open("/proc/net/route").read().splitlines()[1:]
out = {"interfaces": names, "ipv4_routes": len(routes), "connects": {}}
for name, host, port in ARGS["targets"]:
    start = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=3).close()
        outcome = "connected"
    except OSError as exc:
        outcome = type(exc).__name__ + ": " + (exc.strerror or str(exc))
    out["connects"][name] = {"outcome": outcome, "s": time.monotonic() - start}
print(json.dumps(out))
'''

# Prints this job's own address on the workspace network (the route towards the proxy; a
# UDP connect sends nothing), then listens like PEER_LISTEN.
OWN_ADDRESS = r'''
import socket
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect((ARGS["via"], 9))
print("address", probe.getsockname()[0], flush=True)
probe.close()
'''
