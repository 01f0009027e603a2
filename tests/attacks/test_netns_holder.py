"""Consecutive jobs of one slot share a namespace holder: what one leaves behind, the next must
not reach. A worker of its own runs every job in a holder (netns_holders="all"), one process,
so consecutive jobs share one namespace; the test checks that they really do (the first job's
closed connections are still in the kernel's TIME_WAIT table for the next), then that a
listener a job left behind, kept by a process that tried to survive, is gone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from config.settings import Settings
from tests.conftest import AGENT_RUN
from tests.services import WorkerProcess

pytestmark = [pytest.mark.attacks, pytest.mark.integration]
MiB = 1024**2
PORT = 47123
NAME = "airlock-leftover"

PLANT = r"""
import json, os, select, signal, socket, time
PORT, NAME = @PORT@, @NAME@
ns = os.readlink("/proc/self/ns/net")
if os.fork() == 0:  # a daemon: own session, double fork, deaf to the polite signals
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", PORT)); tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", PORT))
    abstract = socket.socket(socket.AF_UNIX); abstract.bind("\0" + NAME); abstract.listen()
    open("/tmp/ready", "w").close()
    while True:
        for s in select.select([tcp, abstract], [], [], 1)[0]:
            conn, _ = s.accept(); conn.sendall(b"leaked"); conn.close()
for _ in range(100):
    if os.path.exists("/tmp/ready"):
        break
    time.sleep(0.05)
got = {"ns": ns}
with socket.create_connection(("127.0.0.1", PORT), 2) as c:
    got["tcp"] = c.recv(16).decode()
with socket.socket(socket.AF_UNIX) as c:
    c.connect("\0" + NAME); got["abstract"] = c.recv(16).decode()
for path, data in (("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001"),
                   ("/etc/hosts", "127.0.0.1 pypi.org")):
    try:
        open(path, "w").write(data); got[path] = "written"
    except OSError as exc:
        got[path] = exc.__class__.__name__
got["hosts"] = open("/etc/hosts").read()
print(json.dumps(got))
""".replace("@PORT@", str(PORT)).replace("@NAME@", repr(NAME))

PROBE = r"""
import errno, json, os, socket
PORT, NAME = @PORT@, @NAME@
got = {"ns": os.readlink("/proc/self/ns/net")}
try:
    socket.create_connection(("127.0.0.1", PORT), 2).close(); got["tcp"] = "connected"
except OSError as exc:
    got["tcp"] = errno.errorcode.get(exc.errno, str(exc))
try:
    with socket.socket(socket.AF_UNIX) as c:
        c.connect("\0" + NAME); got["abstract"] = "connected"
except OSError as exc:
    got["abstract"] = errno.errorcode.get(exc.errno, str(exc))
got["unix_listed"] = NAME in open("/proc/net/unix").read()
port = format(PORT, "04X")
rows = [l.split() for l in open("/proc/net/tcp").read().splitlines()[1:]]
got["tcp_listen"] = [r for r in rows if r[1].endswith(":" + port) and r[3] == "0A"]
got["time_wait"] = len([r for r in rows if ":" + port in (r[1][-5:], r[2][-5:]) and r[3] == "06"])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
    u.bind(("127.0.0.1", PORT)); got["udp_free"] = True
got["port_range"] = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
got["hosts"] = open("/etc/hosts").read()
got["ps"] = sorted(p for p in os.listdir("/proc") if p.isdigit())
print(json.dumps(got))
""".replace("@PORT@", str(PORT)).replace("@NAME@", repr(NAME))


@pytest.fixture(scope="module")
def holder_client(settings: Settings, artifacts: Path) -> Iterator[Airlock]:
    tag = uuid.uuid4().hex[:6]
    s = settings.but(**{
        "fleet": f"{settings.fleet}-ns{tag}", "queue": f"{settings.queue}-ns{tag}",
        "concurrency": 1, "pool_size": 1, "netns_holders": "all"})
    worker = WorkerProcess(s, artifacts / f"worker-{s.fleet}.log",
                           AIRLOCK_NETNS_HOLDERS="all").start()
    client = Airlock(s)
    try:
        yield client
    finally:
        client.close()
        worker.stop()


def run(client: Airlock, code: str, **limits: Any) -> tuple[JobRecord, dict[str, Any]]:
    spec: dict[str, Any] = {"code": code, "limits": {"timeout_s": 20, **limits}}
    record = client.submit(spec).wait(60)
    assert record.verdict == "ok", record.summary() + record.stderr
    return record, json.loads(record.stdout)


def test_what_a_job_leaves_in_its_namespace_is_gone_for_the_next(holder_client: Airlock) -> None:
    _, left = run(holder_client, PLANT)
    assert (left["tcp"], left["abstract"]) == ("leaked", "leaked")  # it did listen
    assert left["/proc/sys/net/ipv4/ip_local_port_range"] in ("OSError", "PermissionError")
    assert left["/etc/hosts"] in ("OSError", "PermissionError")
    disk = holder_client.settings.defaults.disk_bytes - MiB  # no pool for it: a cold container
    for limits in ({}, {"disk_bytes": disk}):
        record, seen = run(holder_client, PROBE, **limits)
        # (No pool under AIRLOCK_TEST_PROFILES=agent: an inner-sandbox profile is never pooled.)
        assert record.phases is not None and record.phases["pooled"] is (not limits and not AGENT_RUN)
        # The same namespace, not only the same inode number (numbers are reused): the planting
        # job's closed connections linger in TIME_WAIT, kernel state no process owns.
        assert seen["ns"] == left["ns"] and seen["time_wait"] > 0, \
            "the jobs did not share a holder: the test proves nothing"
        assert seen["tcp"] == "ECONNREFUSED" and seen["abstract"] == "ECONNREFUSED", seen
        assert not seen["unix_listed"] and seen["tcp_listen"] == [] and seen["udp_free"], seen
        assert seen["port_range"] != ["40000", "40001"] and seen["hosts"] == left["hosts"]
        assert seen["ps"] == ["1", str(max(int(p) for p in seen["ps"]))], seen["ps"]  # launcher, job
