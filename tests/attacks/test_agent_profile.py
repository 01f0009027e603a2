"""The agent profile (A40), outside its inner sandbox: what the outer filter still refuses once a
job may make user, mount, pid and net namespaces; and a host where the inner sandbox does not
hold, whose worker refuses agent jobs and serves the rest.

Each probe runs twice in one job: as the job, and in a child that made itself root of new user,
mount and net namespaces (``unshare -Urnm``), where a kernel without the filter would let most
of them through. The same job under the python profile shows the row that differs: there the
namespaces themselves are refused (A2).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.client import Airlock
from config.settings import Profile, Settings
from tasks.preflight import ERRNO_OF
from tests.attacks.conftest import Attack
from tests.conftest import AGENT_RUN
from tests.services import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
EPERM, ENOSYS = 1, 38
SANDBOX_IMAGE = "airlock/sandbox:latest"  # no bubblewrap, no srt

SURFACE = ERRNO_OF + r"""
import socket
def sock(family, kind, proto):
    try:
        socket.socket(family, kind, proto).close()
        return 0
    except OSError as exc:
        return exc.errno
def probes():
    ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        return {
            "netlink_netfilter": sock(16, 3, 12), "packet_raw": sock(17, 3, 0x0300),
            "packet_dgram": sock(17, 2, 0x0300), "keyctl": errno_of(250, 0, -1, 0),
            "bpf": errno_of(321, 0, None, 0), "io_uring_setup": errno_of(425, 1, None),
            "setns": errno_of(308, ns, 0), "fsopen": errno_of(430, b"tmpfs", 0),
            "clone3": errno_of(435, None, 0),
            "unshare_cgroup": errno_of(272, 0x02000000), "unshare_uts": errno_of(272, 0x04000000),
            "unshare_ipc": errno_of(272, 0x08000000),
        }
    finally:
        os.close(ns)
outer = probes()
uid, gid = os.getuid(), os.getgid()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    got = {"unshare": errno_of(272, 0x10000000 | 0x00020000 | 0x40000000)}  # USER|NS|NET
    if got["unshare"] == 0:
        for path, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{path}", "w") as f:
                f.write(text)
        got["uid_in_namespace"] = os.getuid()
        got["probes"] = probes()
    os.write(w, json.dumps(got).encode())
    os._exit(0)
os.close(w)
inner = json.loads(os.read(r, 65536) or b"{}")
os.waitpid(pid, 0)
print(json.dumps({"outer": outer, "in_user_namespace": inner}))
"""
REFUSED = {"netlink_netfilter": EPERM, "packet_raw": EPERM, "packet_dgram": EPERM,
           "keyctl": EPERM, "bpf": EPERM, "io_uring_setup": EPERM, "setns": EPERM,
           "fsopen": EPERM, "clone3": ENOSYS, "unshare_cgroup": EPERM, "unshare_uts": EPERM,
           "unshare_ipc": EPERM}


def test_a40_outside_the_inner_sandbox_the_agent_profile_still_refuses_the_kernel_surface(
        attack: Attack) -> None:
    record = attack.job(SURFACE, profile="agent", timeout_s=60)
    control = attack.job(SURFACE, profile="python", timeout_s=60)

    got, base = json.loads(record.stdout), json.loads(control.stdout)
    assert record.verdict == "ok", record.summary() + record.stderr
    assert got["outer"] == REFUSED, got
    # The agent profile admits a user namespace (and mount, net): the job becomes its root,
    # and the outer filter still refuses every call here to that root.
    assert got["in_user_namespace"]["unshare"] == 0 and got["in_user_namespace"]["uid_in_namespace"] == 0
    assert got["in_user_namespace"]["probes"] == REFUSED, got
    # The row that differs: the python profile refuses the namespaces themselves (unless this
    # run gives every profile the agent's sandbox: AIRLOCK_TEST_PROFILES=agent).
    assert base["outer"] == REFUSED, base
    assert base["in_user_namespace"]["unshare"] == (0 if AGENT_RUN else EPERM), base
    attack.record("A40", "under the agent profile: netfilter and packet sockets, keyctl, bpf, "
                  "io_uring_setup, setns, fsopen, clone3 and the cgroup/uts/ipc namespaces, as "
                  "the job and as root of its own user, mount and net namespaces (unshare -Urnm)",
                  "every call refused as under the base profile (EPERM; clone3 ENOSYS), in and "
                  "out of the user namespace; the one difference: unshare -Urnm succeeds (the "
                  "python profile refuses it, EPERM)", record,
                  unshare_urnm={"agent": 0, "python": EPERM})


@pytest.fixture(scope="module")
def hollow_agent_worker(settings: Settings, artifacts: Path) -> Iterator[Airlock]:
    """A worker whose agent profile's image has no bubblewrap nor srt (the python image): a host
    where the inner sandbox cannot hold."""
    tag = uuid.uuid4().hex[:6]
    hollow = Profile(image=SANDBOX_IMAGE, inner_sandbox=True)
    s = settings.but(fleet=f"{settings.fleet}-hollow-{tag}", queue=f"{settings.queue}-hollow-{tag}",
                     profiles=settings.profiles | {"agent": hollow})
    proc = WorkerProcess(s, artifacts / f"worker-{s.fleet}.log").start()
    client = Airlock(s)
    try:
        assert "NOT HELD" in proc.log(), proc.log()[-3000:]
        yield client
    finally:
        client.close()
        proc.stop()


def test_a40_where_the_inner_sandbox_does_not_hold_agent_jobs_are_refused_saying_why(
        attack: Attack, hollow_agent_worker: Airlock) -> None:
    record = hollow_agent_worker.submit({"code": "print('ran')", "profile": "agent"}).wait(120)
    other = hollow_agent_worker.submit({"code": "print('ran')"}).wait(120)

    assert record.verdict == "error" and record.stdout == "" and record.container_id is None
    assert "the inner sandbox (layer 6) does not hold on this host" in (record.error or "")
    assert "FileNotFoundError" in (record.error or "") and "srt" in (record.error or ""), record.error
    assert (other.verdict, other.stdout) == ("ok", "ran\n"), other.summary()
    attack.record("A40", "a worker whose agent image has no bubblewrap (its preflight's "
                  "inner-sandbox canary fails) is sent an agent job and a python job",
                  "the worker starts and says the inner sandbox does not hold; the agent job "
                  "ends in an error naming why, unrun; the python job runs", record,
                  error=(record.error or "")[:200])
