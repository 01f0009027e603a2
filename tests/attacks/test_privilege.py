"""Privilege and kernel surface (A1, A2, A4, A5, A6), each attack a real job through the API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from airlock.client import Airlock
from tests.attacks.conftest import Attack, workspace_on_host
from tests.conftest import AGENT_RUN
from tests.services import wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
HERE = Path(__file__).parent
# The agent profile's rows (docs/attacks.md): a job may make a user namespace. Mount, pid and
# net namespaces alone, mount, umount2 and pivot_root still fail: the kernel refuses them to a
# process without CAP_SYS_ADMIN in the namespace it acts on (EPERM, as the filter would).
AGENT_ADMITS = {"clone_newuser": 0, "unshare_newuser": 0}
EPERM = 1
CAP_CHOWN_SETUID_SETGID = 0xC1
SIGSYS = 31

CAPABILITIES = r"""
import ctypes, json, os
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
def capset(bit):
    data = (Data * 2)()
    data[0].effective = data[0].permitted = 1 << bit
    ctypes.set_errno(0)
    return 0 if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) == 0 else ctypes.get_errno()
def ambient_raise(bit):
    ctypes.set_errno(0)
    return 0 if libc.prctl(47, 2, bit, 0, 0) == 0 else ctypes.get_errno()
try:
    os.setuid(0); setuid0 = 0
except OSError as exc:
    setuid0 = exc.errno
print(json.dumps({
    "status": {k: status[k].strip() for k in ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd",
                                              "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters")},
    "capset_sys_admin": capset(21), "capset_chown": capset(0), "capset_net_raw": capset(13),
    "ambient_chown": ambient_raise(0), "setuid0": setuid0,
}))
"""


def test_a01_capabilities_none_effective_three_in_the_bounding_set(attack: Attack) -> None:
    record = attack.job(CAPABILITIES)

    got = json.loads(record.stdout)
    status = {k: v for k, v in got["status"].items()}
    assert record.verdict == "ok", record.summary()
    uid = int(status["Uid"].split()[0])
    assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(uid)] * 4
    first, count = attack.settings.sandbox.job_uids
    assert first <= uid < first + count  # its own (workers/slots.py), no host account's
    # Stricter than A1's text (CapEff = CapPrm = CapBnd = CHOWN|SETUID|SETGID): the job runs as
    # a non-root uid and runc sets no ambient capabilities, so the execve of its command clears the
    # permitted and effective sets. The three stay only in the bounding set, where nothing can
    # take them back up (no-new-privileges, no setuid binaries): the job holds no capability.
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert int(status["CapBnd"], 16) == CAP_CHOWN_SETUID_SETGID
    assert (status["NoNewPrivs"], status["Seccomp"], status["Seccomp_filters"]) == ("1", "2", "1")
    # Raising any capability fails, in the bounding set or not; so does becoming root.
    for key in ("capset_sys_admin", "capset_chown", "capset_net_raw", "ambient_chown", "setuid0"):
        assert got[key] == EPERM, (key, got[key])
    attack.record("A1", "read /proc/self/status; capset CAP_SYS_ADMIN, CAP_CHOWN, CAP_NET_RAW; "
                  "raise an ambient capability; setuid(0)",
                  "CapEff=CapPrm=CapInh=CapAmb=0, CapBnd=0xc1 (CHOWN|SETUID|SETGID), "
                  "NoNewPrivs 1, Seccomp 2; every raise EPERM", record)


def test_a02_denied_syscalls_match_the_golden_table_through_the_api(attack: Attack) -> None:
    golden = json.loads((HERE / "golden_errnos.json").read_text()) | (AGENT_ADMITS if AGENT_RUN else {})
    record = attack.job((HERE / "probes" / "syscall_probe.py").read_text(), timeout_s=60)

    assert record.verdict == "ok", record.summary()
    got = json.loads(record.stdout)
    wrong = {k: {"got": got.get(k), "golden": golden.get(k)}
             for k in golden.keys() | got.keys() if got.get(k) != golden.get(k)}
    assert not wrong
    refused = sorted(k for k, v in got.items() if v and not k.startswith("ok_"))
    attack.record("A2", f"{len(got)} syscalls with harmless arguments (mount, unshare/clone with "
                  "namespace flags, setns, keyctl, bpf, perf_event_open, userfaultfd, io_uring, "
                  "ptrace, kexec, modules, btrfs subvolume ioctls, …)",
                  f"all {len(refused)} refused with their golden errno (EPERM, or ENOSYS for "
                  f"clone3/NUMA/AIO); {len(got) - len(refused)} controls succeed", record,
                  golden_entries=len(golden))


FOREIGN_ABI = r"""
#include <stdio.h>
int main(void) {
    long ret;
    printf("before\n");
    fflush(stdout);
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20));  /* i386 getpid */
    printf("after %ld\n", ret);
    return 0;
}
"""


def test_a02_a_foreign_syscall_abi_is_killed_by_sigsys_and_flagged(attack: Attack) -> None:
    record = attack.job(FOREIGN_ABI, profile="c", timeout_s=60)

    assert record.stdout == "before\n", record.summary()
    assert (record.verdict, record.exit_code, record.signal) == ("signaled", 128 + SIGSYS, SIGSYS)
    assert record.evidence is not None and record.evidence["seccomp_killed"] is True
    attack.record("A2", "an i386 syscall (int $0x80) from a 64-bit C program",
                  "killed by SIGSYS before the call ran (bad-arch action); evidence flag "
                  "seccomp_killed", record)


SOCKETS = r"""
import json, socket
out = {}
for name, family, kind, proto in [("af_alg", 38, 5, 0), ("af_packet_raw", 17, 3, 0x0300),
                                  ("af_packet_dgram", 17, 2, 0x0300), ("inet_raw_icmp", 2, 3, 1),
                                  ("inet6_raw", 10, 3, 58), ("inet_packet_type", 2, 10, 0x0300),
                                  ("netlink_audit", 16, 3, 9), ("af_vsock", 40, 1, 0)]:
    try:
        socket.socket(family, kind, proto).close()
        out[name] = 0
    except OSError as exc:
        out[name] = exc.errno
print(json.dumps(out))
"""


def test_a04_af_alg_packet_and_raw_sockets_fail(attack: Attack) -> None:
    record = attack.job(SOCKETS)

    got = json.loads(record.stdout)
    assert record.verdict == "ok" and got and all(v == EPERM for v in got.values()), got
    attack.record("A4", "socket(AF_ALG), AF_PACKET raw/dgram, raw INET/INET6, SOCK_PACKET, "
                  "netlink audit, AF_VSOCK", "every one EPERM", record, sockets=len(got))


PRIVILEGE_REGAIN = r"""
cd /workspace
echo "suid: $(find / -xdev \( -perm -4000 -o -perm -2000 \) -type f 2>/dev/null | wc -l)"
policy=$(grep -rlsI --exclude-dir=proc --exclude-dir=sys -e "SCMP""_ACT_" -e "default""Action" /)
echo "policy: $(echo -n "$policy" | grep -c .)"
echo "policy_names: $(find / -xdev \( -iname '*seccomp*.json' -o -iname '*apparmor*' \) 2>/dev/null | wc -l)"
cp /bin/cat ./cat && chmod 4755 ./cat && ./cat /proc/self/status | grep -E '^(Uid|CapEff)' | tr '\t' ' '
su -c id root </dev/null >/dev/null 2>&1; echo "su: $?"
mount -t tmpfs none /tmp >/dev/null 2>&1; echo "mount: $?"
echo x > /proc/self/attr/current 2>/dev/null; echo "lsm_attr: $?"
"""


def test_a05_no_setuid_binaries_no_privilege_regain_no_visible_policy(attack: Attack) -> None:
    record = attack.job(PRIVILEGE_REGAIN, profile="shell", timeout_s=30)

    lines = dict(line.split(": ", 1) for line in record.stdout.splitlines() if ": " in line)
    assert lines["suid"] == "0", record.stdout  # the image ships none
    assert lines["policy"] == "0" and lines["policy_names"] == "0", record.stdout
    # A setuid copy the job makes of its own file gains nothing (nosuid, no-new-privileges).
    first, count = attack.settings.sandbox.job_uids
    uid = int(lines["Uid"].split()[0])
    assert lines["Uid"].split()[:2] == [str(uid)] * 2 and first <= uid < first + count
    assert int(lines["CapEff"], 16) == 0
    assert lines["su"] != "0" and lines["mount"] != "0" and lines["lsm_attr"] != "0"
    attack.record("A5", "look for setuid/setgid binaries and policy files; run a setuid copy; "
                  "su, mount, write /proc/self/attr/current",
                  "no setuid binary in the image; no seccomp/AppArmor policy visible; the "
                  "setuid copy runs as the job's own uid with CapEff 0; su, mount, attr all fail",
                  record)


CHOWN = r"""
echo data > /workspace/mine
chown 0:0 /workspace/mine 2>/dev/null; echo "chown_root: $?"
chown 65534 /workspace/mine 2>/dev/null; echo "chown_nobody: $?"
chmod 4755 /workspace/mine; echo "uid: $(id -u)"
touch /workspace/.ready
i=0; while [ ! -e /workspace/.go ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
"""


def test_a06_runs_as_non_root_and_chowned_files_are_never_root_owned_on_the_host(
        attack: Attack, client: Airlock) -> None:
    handle = client.submit(code=CHOWN, profile="shell", limits={"timeout_s": 30})
    host = workspace_on_host(client, handle.id)
    deadline = time.monotonic() + 30
    while not os.path.lexists(host / ".ready") and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = os.lstat(host / "mine")  # lstat: the test, too, never follows the job's links
    record = handle.wait(60)

    lines = dict(line.split(": ", 1) for line in record.stdout.splitlines())
    uid = int(lines.pop("uid"))
    assert lines == {"chown_root": "1", "chown_nobody": "1"}, record.stdout
    first, count = attack.settings.sandbox.job_uids
    assert first <= uid < first + count  # the job's own, from a range no host account uses
    assert (seen.st_uid, seen.st_gid) == (uid, uid)
    assert wait_gone(host)  # the job's volume goes with its container, just after the result
    attack.record("A6", "chown a file to root and to nobody; setuid bit on it",
                  f"job runs as its own uid ({uid}, no host account's); chown fails (EPERM); on "
                  "the host the file is owned by that uid and gid and the volume is deleted with "
                  "the container", record)
