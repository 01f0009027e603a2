"""Filesystem attacks (A7 to A13, A18), each a real job through the API."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from airlock.client import Airlock
from tests.attacks.conftest import Attack, workspace_on_host
from tests.conftest import AGENT_RUN
from tests.services import wait_gone
from workers import inner_sandbox

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
EPERM, ENOENT, EACCES, EROFS = 1, 2, 13, 30
FINGERPRINT = r"""
sha256sum /etc/os-release /etc/shadow /bin/sh /usr/bin/python3 2>&1 | cut -c1-16
# /etc/passwd names each job's own uid (workers/identity.py): its shape, not its bytes
cut -d: -f1,6,7 /etc/passwd
find /etc /usr/bin /usr/lib/python3 -xdev 2>/dev/null | wc -l
ls -A /workspace /opt/venv /home/appuser /tmp /var/tmp /run /dev/shm
"""
RM_RF = r"""
# (rm empties /tmp and /workspace too: its errors are counted on the fly, not kept in a file)
set -- $( (rm -rf / --no-preserve-root 2>&1; echo "rm_status=$?") \
    | awk '/Read-only file system/ {n++} /^rm_status=/ {split($0, a, "="); s = a[2]} END {print n, s}')
echo "read_only_errors: $1"
status=$2
for path in /etc/passwd /usr/bin/python3 /bin/sh /usr/lib/python3.11/os.py; do
    test -e $path && echo "kept: $path"
done
for path in /etc/airlock-x /usr/airlock-x /bin/airlock-x /usr/lib/airlock-x /airlock-x; do
    (echo x > $path) 2>&1 | grep -q 'Read-only file system' && echo "refused: $path"
done
exit $status
"""


def test_a07_rm_rf_root_meets_the_read_only_root_and_the_next_job_sees_a_pristine_image(
        attack: Attack) -> None:
    before = attack.job(FINGERPRINT, profile="shell")
    record = attack.job(RM_RF, profile="shell", timeout_s=60)
    after = attack.job(FINGERPRINT, profile="shell")

    lines = record.stdout.splitlines()
    assert (record.verdict, record.exit_code) == ("nonzero_exit", 1), record.summary()
    assert int(lines[0].split(": ")[1]) > 1000, record.stdout  # every file of the image refused
    assert sum(line.startswith("kept: ") for line in lines) == 4, record.stdout
    assert sum(line.startswith("refused: ") for line in lines) == 5, record.stdout
    assert before.verdict == after.verdict == "ok"
    assert after.stdout == before.stdout  # same files, same hashes, empty writable dirs
    attack.record("A7", "rm -rf / --no-preserve-root; writes to /etc, /usr, /bin, /usr/lib, /",
                  "EROFS for every file of the image; the next job's fingerprint (hashes, "
                  "file counts, empty writable dirs) equals the one taken before", record,
                  row="rm -rf /", read_only_errors=int(lines[0].split(": ")[1]))


NOEXEC = r"""
touch /run/t 2>/dev/null; echo "/run writable: $?"
for dir in /tmp /var/tmp /dev/shm; do
    cp /bin/true $dir/t && chmod 755 $dir/t
    $dir/t 2>/dev/null; echo "$dir exec: $?"
    /lib64/ld-linux-x86-64.so.2 $dir/t 2>/dev/null; echo "$dir ld.so: $?"
done
python3 -c 'import os; os.execv("/tmp/t", ["t"])' 2>&1 | grep -c PermissionError | sed 's/^/execv: /'
cp /bin/true /workspace/t && /workspace/t; echo "/workspace exec: $?"
"""


def test_a08_an_elf_copied_to_tmp_cannot_be_executed(attack: Attack) -> None:
    record = attack.job(NOEXEC, profile="shell")

    got = dict(line.split(": ") for line in record.stdout.splitlines())
    assert got["/run writable"] == "1"  # root's 0755 tmpfs: the job cannot even write there
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        assert got[f"{directory} exec"] == "126", got  # EACCES: noexec mount
        assert got[f"{directory} ld.so"] != "0", got  # mmap(PROT_EXEC) refused as well
    assert got["execv"] == "1"
    assert got["/workspace exec"] == "0"  # by design: compiled programs run from /workspace
    attack.record("A8", "copy /bin/true to /tmp, /var/tmp, /dev/shm (and /run) and run it, "
                  "directly and through ld.so", "exit 126 (EACCES, noexec) everywhere; "
                  "ld.so cannot map it either; /run is not even writable", record)


PROC_SYS = r"""
import json, os
writes = {}
for path in ["/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/proc/sys/vm/drop_caches",
             "/proc/sys/kernel/modprobe", "/sys/fs/cgroup/release_agent",
             "/sys/fs/cgroup/memory/release_agent", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/pids/pids.max", "/sys/kernel/uevent_helper", "/proc/1/mem",
             "/sys/kernel/mm/transparent_hugepage/enabled"]:
    try:
        os.close(os.open(path, os.O_WRONLY))  # open for write and close: never write
        writes[path] = 0
    except OSError as exc:
        writes[path] = exc.errno
def size(path):
    try:
        with open(path, "rb") as f:
            return len(f.read(4096))
    except OSError as exc:
        return -exc.errno
masked = {p: size(p) for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list"]}
masked["/sys/firmware"] = len(os.listdir("/sys/firmware"))
try:  # each key's uid, type and description
    keys = [line.split(None, 8)[5:] for line in open("/proc/keys").read().splitlines()]
except OSError:
    keys = []
procs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            procs[pid] = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()
        except OSError:
            pass
print(json.dumps({"writes": writes, "masked": masked, "procs": procs, "keys": keys,
                  "uid": os.getuid()}))
"""


def test_a09_proc_and_sys_are_read_only_masked_and_show_only_the_job(attack: Attack) -> None:
    record = attack.job(PROC_SYS)

    got = json.loads(record.stdout)
    opened = {path: errno for path, errno in got["writes"].items() if errno == 0}
    assert not opened, opened
    assert all(v in (EROFS, EACCES, ENOENT, EPERM) for v in got["writes"].values()), got["writes"]
    if AGENT_RUN:
        # The agent profile's row (docs/attacks.md): /proc and /sys without the engine's masks,
        # which a fresh procfs in a user namespace requires. What that shows a job: the keys it
        # possesses in /proc/keys (runc's empty session keyring of this container, named after
        # its id), /sys/firmware's listing; kcore and timer_list stay shut.
        assert got["masked"]["/proc/kcore"] <= 0 and got["masked"]["/proc/timer_list"] <= 0, got
        assert all(uid == str(got["uid"]) or (kind, desc[:5], desc[-7:]) == ("keyring", "_ses.",
                                                                            ": empty")
                   for uid, _, kind, desc in got["keys"]), got["keys"]
    else:
        assert all(v <= 0 for v in got["masked"].values()), got["masked"]  # empty or absent
    # PID 1 is the launcher, then the job's python (and nothing of the host or the worker)
    assert got["procs"].get("1") == "/.airlock/init", got["procs"]
    assert len(got["procs"]) <= 3 and set(got["procs"].values()) <= {"/.airlock/init", "python3"}, \
        got["procs"]
    attack.record("A9", "open for write (then close) core_pattern, sysrq-trigger, drop_caches, "
                  "modprobe, cgroup release_agent and limits, uevent_helper, /proc/1/mem; read "
                  "/proc/kcore, /proc/keys, /proc/timer_list, /sys/firmware; list /proc",
                  "every open refused (EROFS/EACCES/ENOENT); masked files empty; /proc holds "
                  f"{len(got['procs'])} processes, the launcher and the job", record)


DEVICES = r"""
import json, os, stat
blocks = [e.name for e in os.scandir("/dev") if stat.S_ISBLK(os.lstat(e.path).st_mode)]
out = {"block_devices": blocks, "dev": sorted(os.listdir("/dev"))}
for name, mode, dev in [("block", stat.S_IFBLK, os.makedev(7, 0)), ("char", stat.S_IFCHR,
                        os.makedev(1, 3)), ("whiteout", stat.S_IFCHR, 0)]:
    try:
        os.mknod(f"/tmp/{name}", mode | 0o600, dev)
        out[name] = 0
    except OSError as exc:
        out[name] = exc.errno
print(json.dumps(out))
"""


def test_a10_no_block_devices_and_mknod_fails(attack: Attack) -> None:
    record = attack.job(DEVICES)

    got = json.loads(record.stdout)
    assert got["block_devices"] == []
    assert (got["block"], got["char"], got["whiteout"]) == (EPERM, EPERM, EPERM)
    assert set(got["dev"]) <= {"console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts",
                               "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom",
                               "zero"}, got["dev"]
    attack.record("A10", "look for block devices; mknod a block device, /dev/null's twin, "
                  "a whiteout", f"no block device ({len(got['dev'])} entries in /dev); "
                  "every mknod EPERM", record)


DOCKER_API = r"""
import json, os, socket
sockets = []
for top in ("/", "/run", "/var/run", "/tmp", "/dev/shm"):
    for root, dirs, files in os.walk(top):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
        for name in files:
            path = os.path.join(root, name)
            try:
                if name.endswith(".sock") or __import__("stat").S_ISSOCK(os.lstat(path).st_mode):
                    sockets.append(path)
            except OSError:
                pass
connects = {}
for host, port in [("127.0.0.1", 2375), ("127.0.0.1", 2376), ("172.17.0.1", 2375),
                   ("172.17.0.1", 2376)]:
    s = socket.socket()
    s.settimeout(2)
    connects[f"{host}:{port}"] = s.connect_ex((host, port))
    s.close()
env = {k: v for k, v in os.environ.items() if "DOCKER" in k.upper() or "CONTAINERD" in k.upper()}
print(json.dumps({"sockets": sorted(set(sockets)), "connects": connects, "env": env}))
"""


def test_a11_no_docker_api_anywhere(attack: Attack) -> None:
    record = attack.job(DOCKER_API)

    got = json.loads(record.stdout)
    assert got["sockets"] == [] and got["env"] == {}, got
    assert all(code != 0 for code in got["connects"].values()), got["connects"]
    attack.record("A11", "search the filesystem for docker.sock/containerd sockets, "
                  "DOCKER_HOST in the environment, connect to 2375/2376 on loopback and the "
                  "docker0 gateway", "no socket, no variable; every connection refused or "
                  f"unreachable ({sorted(set(got['connects'].values()))})", record)


MOUNTS = r"""
import json
rows = []
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ")
    f = left.split()
    fstype, source, sopts = right.split()
    rows.append({"point": f[4], "root": f[3], "opts": f[5], "fstype": fstype, "sopts": sopts})
print(json.dumps(rows))
"""
DOCKER_MASKS = {"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"}
DOCKER_READ_ONLY = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
CGROUPS = {f"/sys/fs/cgroup/{c}" for c in ("cpu", "cpuacct", "cpuset", "memory", "devices",
                                           "freezer", "blkio", "pids", "systemd", "net_cls",
                                           "net_prio", "perf_event", "hugetlb", "rdma", "misc",
                                           "net_cls,net_prio", "cpu,cpuacct")}


def test_a12_mounts_are_exactly_the_expected_ones(attack: Attack) -> None:
    record = attack.job(MOUNTS)

    rows = json.loads(record.stdout)
    by_point = {r["point"]: r for r in rows}

    def opts(point: str) -> set[str]:
        return set(by_point[point]["opts"].split(",")) | set(by_point[point]["sopts"].split(","))

    expected = {"/", "/proc", "/dev", "/dev/pts", "/dev/mqueue", "/dev/shm", "/sys",
                "/sys/fs/cgroup", "/tmp", "/var/tmp", "/run", "/workspace", "/opt/venv",
                "/home/appuser", "/etc/hostname", "/.airlock/init", *STDIO, *IDENTITY, *INNER}
    extra = set(by_point) - expected - DOCKER_MASKS - DOCKER_READ_ONLY - CGROUPS
    if AGENT_RUN:  # the agent profile's row: no mask, no read-only /proc path of the engine's
        assert not (DOCKER_MASKS | DOCKER_READ_ONLY) & set(by_point), by_point.keys()
    assert not extra, extra
    assert expected <= set(by_point), expected - set(by_point)
    assert "ro" in opts("/") and by_point["/"]["fstype"] == "overlay"
    for point, size in (("/tmp", "1048576k"), ("/var/tmp", "524288k"), ("/run", "65536k"),
                        ("/dev/shm", "65536k")):
        assert by_point[point]["fstype"] == "tmpfs" and {"nosuid", "nodev", "noexec",
                                                         f"size={size}"} <= opts(point), point
    roots = {by_point[p]["root"] for p in ("/workspace", "/opt/venv", "/home/appuser")}
    volume = {r.split("/")[1] for r in roots}
    assert len(volume) == 1 and len(roots) == 3, roots  # one per-job volume, three folders
    for point in ("/workspace", "/opt/venv", "/home/appuser"):
        assert by_point[point]["fstype"] == "btrfs" and {"nosuid", "nodev"} <= opts(point)
    for point in DOCKER_MASKS | DOCKER_READ_ONLY | CGROUPS | {"/sys", "/etc/hostname"}:
        if point in by_point and point not in ("/proc/keys", "/proc/timer_list", "/proc/kcore",
                                               "/proc/latency_stats", "/proc/timer_stats",
                                               "/proc/sched_debug"):
            assert "ro" in opts(point), point  # (the /dev/null masks are empty files)
    host_binds = [r for r in rows if r["fstype"] not in ("tmpfs", "proc", "sysfs", "devpts",
                                                         "mqueue", "cgroup", "overlay", "btrfs")
                  and r["point"] not in STDIO and r["point"] not in IDENTITY + INNER]
    assert sorted(r["point"] for r in host_binds) == ["/.airlock/init", "/etc/hostname"], host_binds
    # The launcher (PID 1): the host's build, read-only, the one file of its folder.
    assert "ro" in opts("/.airlock/init") and "ro" in opts("/etc/hostname")
    assert by_point["/.airlock/init"]["root"] == attack.settings.sandbox.launcher_path
    # The stdio FIFOs: read-only binds of single files from one folder of the worker's.
    folders = set()
    for point in (*STDIO, *IDENTITY, *INNER):
        assert "ro" in opts(point), point
        folder, _, name = by_point[point]["root"].rpartition("/")
        assert name == point.rsplit("/", 1)[1] or point in INNER, by_point[point]
        folders.add(folder)
    assert len(folders) == 1, folders
    attack.record("A12", "read /proc/self/mountinfo", f"{len(rows)} mounts: read-only overlay "
                  "root; sized tmpfs nosuid,nodev,noexec (/tmp 1G, /var/tmp 512M, /run 64M, "
                  "/dev/shm 64M); /workspace, /opt/venv, /home/appuser from one per-job btrfs "
                  "subvolume (nosuid,nodev); Docker's masks read-only; the only host files are "
                  "/etc/hostname, the launcher at /.airlock/init, the job's FIFOs at "
                  "/.airlock/{in,out,err,status} and its /etc/passwd and /etc/group (its own uid;"
                  " all ro)", record, volume=volume.pop())


STDIO = ("/.airlock/in", "/.airlock/out", "/.airlock/err", "/.airlock/status")
IDENTITY = ("/etc/passwd", "/etc/group")
# An agent job's inner-sandbox settings and /etc/hosts (workers/inner_sandbox.py), from the same
# folder; AIRLOCK_TEST_PROFILES=agent gives every job of the run the agent's container.
INNER = tuple(inner_sandbox.TARGETS.values()) if AGENT_RUN else ()
PIPE_TRIES = r"""
import json, os
STATUS = "/.airlock/status"
def attempt(what, fn):
    try:
        fn()
        return "done"
    except OSError as exc:
        return exc.strerror
tries = {
    "read stdout pipe": attempt("r", lambda: os.close(os.open("/.airlock/out", os.O_RDONLY | os.O_NONBLOCK))),
    "read stderr pipe": attempt("r", lambda: os.close(os.open("/.airlock/err", os.O_RDONLY | os.O_NONBLOCK))),
    "write stdin pipe": attempt("w", lambda: os.close(os.open("/.airlock/in", os.O_WRONLY | os.O_NONBLOCK))),
    "write status pipe": attempt("w", lambda: os.close(os.open(STATUS, os.O_WRONLY | os.O_NONBLOCK))),
    "read status pipe": attempt("r", lambda: os.close(os.open(STATUS, os.O_RDONLY | os.O_NONBLOCK))),
    "chmod status pipe": attempt("c", lambda: os.chmod("/.airlock/status", 0o666)),
    "chmod stdout pipe": attempt("c", lambda: os.chmod("/.airlock/out", 0o666)),
    "unlink stdout pipe": attempt("u", lambda: os.unlink("/.airlock/out")),
    "replace stdout pipe": attempt("m", lambda: os.rename("/workspace/x", "/.airlock/out")),
    "mkfifo beside them": attempt("f", lambda: os.mkfifo("/.airlock/new")),
}
fd = os.open("/.airlock/out", os.O_WRONLY)  # its own output, a second way in: allowed
os.write(fd, b"second way\n")
os.close(fd)
print(json.dumps(tries))
"""


def test_a12b_the_jobs_stdio_fifos_take_its_output_and_nothing_else(attack: Attack) -> None:
    record = attack.job(PIPE_TRIES, files={"x": "x"})

    lines = record.stdout.splitlines()
    assert "second way" in lines, record.summary()
    tries = json.loads(next(line for line in lines if line.startswith("{")))
    refused = {"Permission denied", "Read-only file system", "Device or resource busy",
               "Operation not permitted", "Invalid cross-device link"}
    assert all(result in refused for result in tries.values()), tries
    assert record.verdict == "ok"
    attack.record("A12b", "open the stdout/stderr FIFOs for reading, the stdin FIFO for writing, "
                  "the status FIFO (the launcher's word on the job's end) either way; chmod, "
                  "unlink or rename over them; mkfifo beside them",
                  "all refused (" + ", ".join(sorted(set(tries.values()))) + "); writing its own "
                  "output through /.airlock/out works, as through fd 1", record)


PLANT_LINKS = r"""
cd /workspace
ln -s /etc/shadow shadow; ln -s /etc/shadow result.json; ln -s /proc/self/environ environ
ln -s /proc/1/environ launcher_environ; ln -s ../../../../../../../etc/passwd up
ln -s /nonexistent/airlock dangling; ln -s / rootdir; ln -s / output
ln -s "$HOST_CANARY" host_canary; ln -s "$(dirname "$HOST_CANARY")" host_dir
ln -s "$(dirname "$HOST_CANARY")/created-by-job" host_new
ln -s / /opt/venv/rootdir; ln -s /etc/shadow /home/appuser/.bashrc
mkfifo fifo; mkdir -p deep/a/b && ln -s ../../../../.. deep/a/b/escape
ln /etc/passwd hardlink 2>/dev/null; echo "hardlink: $?"
echo "planted: $(find /workspace /opt/venv /home/appuser -type l | wc -l)"
touch /workspace/.ready
i=0; while [ ! -e /workspace/.go ] && [ $i -lt 20 ]; do sleep 0.05; i=$((i+1)); done
"""
SEES_NOTHING = "ls -A /workspace /opt/venv /home/appuser\n"


def test_a13_planted_symlinks_are_never_followed_by_the_worker(
        attack: Attack, client: Airlock, tmp_path: Path) -> None:
    canary_dir = tmp_path / f"a13-{uuid.uuid4().hex[:6]}"
    canary_dir.mkdir()
    host_canary = canary_dir / "canary"
    host_canary.write_text("untouched\n")
    # atime before mtime: under relatime, any read of the file would move its atime.
    os.utime(host_canary, (time.time() - 3600, time.time() - 60))
    before = os.stat(host_canary)
    handle = client.submit(code=PLANT_LINKS, profile="shell", env={"HOST_CANARY": str(host_canary)},
                           limits={"timeout_s": 30})
    host = workspace_on_host(client, handle.id)
    record = handle.wait(60)
    after_job = attack.job(SEES_NOTHING, profile="shell")

    after = os.stat(host_canary)
    assert record.verdict == "ok", record.summary()
    assert "hardlink: 1" in record.stdout  # EXDEV: the image is another filesystem
    assert "planted: 14" in record.stdout, record.stdout
    assert host_canary.read_text() == "untouched\n"
    assert (after.st_atime_ns, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_atime_ns, before.st_mtime_ns, before.st_ctime_ns)  # never read nor written
    assert sorted(os.listdir(canary_dir)) == ["canary"]  # nothing created through host_new
    assert wait_gone(host.parent)  # the subvolume went whole, links unfollowed
    assert after_job.stdout.split() == ["/home/appuser:", "/opt/venv:", "/workspace:",
                                        "main.sh"], after_job.stdout
    attack.record("A13", "plant links to /etc/shadow, /proc/self/environ, /proc/1/environ, "
                  "../../etc/passwd, a dangling target, / (as result.json, output, in /workspace, "
                  "/opt/venv and ~/.bashrc), a host canary file and its folder, a FIFO; hard "
                  "link /etc/passwd", "the worker reads no file out of a job: the subvolume is "
                  "deleted whole, no link followed; the host canary keeps its content, atime, "
                  "mtime and ctime, nothing is created beside it; the next job sees empty "
                  "folders; hard link EXDEV", record)


PERSIST = r"""
tag=airlock-marker
for dir in /tmp /var/tmp /run /dev/shm /workspace /opt/venv /home/appuser /dev/mqueue; do
    touch $dir/$tag 2>/dev/null && echo "wrote $dir" || echo "refused $dir"
done
site=/home/appuser/.local/lib/python3.11/site-packages
mkdir -p $site /home/appuser/.config/pip /opt/venv/bin /opt/venv/lib/python3.11/site-packages
echo 'import sys; print("PTH-RAN", file=sys.stderr)' > $site/airlock_evil.pth
cp $site/airlock_evil.pth /opt/venv/lib/python3.11/site-packages/
printf '[global]\nindex-url = http://evil.invalid/simple\n' > /home/appuser/.config/pip/pip.conf
cp /home/appuser/.config/pip/pip.conf /opt/venv/pip.conf
printf '#!/bin/sh\necho HIJACKED\n' > /opt/venv/bin/python3 && chmod 755 /opt/venv/bin/python3
echo 'echo BASHRC-RAN' >> /home/appuser/.bashrc; echo 'echo PROFILE-RAN' >> /home/appuser/.profile
for path in /etc/pip.conf /usr/lib/python3/dist-packages/airlock_evil.pth /etc/profile.d/x.sh; do
    (echo x > $path) 2>/dev/null || echo "refused $path"
done
ipcmk -M 4096 >/dev/null && echo "wrote shm segment"
"""
CHECK = r"""
import glob, json, os, subprocess
markers = [p for d in ("/tmp", "/var/tmp", "/run", "/dev/shm", "/workspace", "/opt/venv",
                       "/home/appuser", "/dev/mqueue") for p in glob.glob(f"{d}/airlock*")]
leftovers = [p for p in ("/home/appuser/.local", "/home/appuser/.config/pip", "/opt/venv/bin",
                         "/opt/venv/pip.conf", "/opt/venv/lib", "/home/appuser/.bashrc")
             if os.path.lexists(p)]
bash = subprocess.run(["bash", "-lic", "true"], capture_output=True, text=True, timeout=10)
pip = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True)
ipcs = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout.split("\n")[3:]
print(json.dumps({"markers": markers, "leftovers": leftovers, "bash": bash.stdout + bash.stderr,
                  "pip": pip.stdout, "ipcs": [l for l in ipcs if l.strip()]}))
"""


def test_a18_nothing_persists_across_jobs(attack: Attack) -> None:
    planted = attack.job(PERSIST, profile="shell")
    record = attack.job(CHECK)  # `python3`: the planted /opt/venv/bin/python3 would run here

    assert planted.stdout.count("wrote ") == 8, planted.stdout  # 7 dirs + a SysV segment
    assert planted.stdout.count("refused ") == 4, planted.stdout  # /run and 3 image paths
    assert record.verdict == "ok" and "HIJACKED" not in record.stdout, record.summary()
    got = json.loads(record.stdout)
    assert got["markers"] == [] and got["leftovers"] == [] and got["ipcs"] == [], got
    assert "RAN" not in got["bash"] + record.stderr and "evil" not in got["pip"], got
    attack.record("A18", "markers in /tmp, /var/tmp, /run, /dev/shm, /dev/mqueue, /workspace, "
                  "/opt/venv, ~; a .pth in user and venv site-packages; pip.conf in ~ and the "
                  "venv; a fake /opt/venv/bin/python3; ~/.bashrc, ~/.profile; a SysV shm segment",
                  "the next job sees none of them: its python3 is the image's, no .pth runs, "
                  "pip has no config, bash -l runs no rc line, ipcs is empty", record)
