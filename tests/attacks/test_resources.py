"""Resource attacks (A23 to A28), each a real job through the API.

The security design's destructive-command rows appear by name: rm -rf / (test_filesystem),
the fork bomb, dd if=/dev/zero, python -c "a='x'*10**10" and while true; do :; done (here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import docker
import psutil
import pytest

from airlock.client import Airlock, JobHandle
from airlock.records import JobRecord
from tests.attacks.conftest import Attack
from tests.conftest import RunJob
from tests.services import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
MiB, GiB = 1024**2, 1024**3
CANARY = "print('canary ok')"
VOLUMES = Path("/var/lib/airlock/volumes")


def timed_canary(run_job: RunJob) -> tuple[float, JobRecord]:
    t0 = time.monotonic()
    record = run_job(CANARY, timeout_s=30)
    assert record.verdict == "ok" and record.stdout == "canary ok\n", record.summary()
    return time.monotonic() - t0, record


def wait_running(client: Airlock, handle: JobHandle, settle_s: float) -> None:
    deadline = time.monotonic() + 30
    while client.result(handle.id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle_s)  # let the attack reach its cap before the canary goes in


def worker_rss(worker: WorkerProcess) -> int:
    main = psutil.Process(worker.pid)
    return sum(p.memory_info().rss for p in [main, *main.children(recursive=True)])


# --- A23 fork bombs ---------------------------------------------------------------------------

def seconds_to_cap(client: Airlock, handle: JobHandle, cap: int) -> float:
    """From the job's start until its processes reach the cap, read from the host's cgroup."""
    deadline = time.monotonic() + 30
    while not (cid := client.result(handle.id).container_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()  # the container has started: the runner records its id then
    api = docker.APIClient(version="auto")
    try:
        parent = api.inspect_container(cid)["HostConfig"]["CgroupParent"].strip("/")
    finally:
        api.close()
    current = Path("/sys/fs/cgroup/pids") / parent / "pids.current"
    while time.monotonic() - t0 < 10:
        try:
            if int(current.read_text()) >= cap:
                return time.monotonic() - t0
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"never reached {cap} processes")


def _bomb_with_canary(attack: Attack, client: Airlock, run_job: RunJob, cap: int,
                      **spec: object) -> tuple[JobRecord, float, float, JobRecord, float]:
    baseline_s, _ = timed_canary(run_job)
    bomb = client.submit(**spec)
    to_cap = seconds_to_cap(client, bomb, cap)
    time.sleep(0.5)
    canary_s, canary = timed_canary(run_job)  # submitted while the bomb holds its cap
    record = bomb.wait(60)
    assert canary.finished_at is not None and record.finished_at is not None
    assert canary.finished_at < record.finished_at, "the canary did not run during the bomb"
    return record, baseline_s, canary_s, canary, to_cap


def test_a23_fork_bomb_shell_row_pids_cap_holds_and_a_concurrent_canary_runs_in_normal_time(
        attack: Attack, client: Airlock, run_job: RunJob) -> None:
    bomb = ":(){ :|:& };:"
    record, baseline_s, canary_s, canary, to_cap = _bomb_with_canary(
        attack, client, run_job, 256, argv=["bash", "-c", f"{bomb}; sleep 60"], profile="shell",
        limits={"timeout_s": 5})

    evidence = record.evidence or {}
    assert record.verdict == "timeout", record.summary()
    assert evidence["pids_capped"] and evidence["pids_peak"] == 256, evidence
    assert canary_s < max(3.0, 5 * baseline_s), (canary_s, baseline_s)
    attack.record("A23", f"bash -c '{bomb}; sleep 60' (default pids cap 256, timeout 5 s); a "
                  "canary job submitted once the bomb is at its cap",
                  "pids cap holds (peak 256, forks fail with EAGAIN); the bomb ends at its "
                  "timeout; the canary finishes during the bomb", record,
                  row=":(){ :|:& };: (fork bomb)", canary_during_s=round(canary_s, 2),
                  canary_during_wall_ms=canary.wall_ms, canary_baseline_s=round(baseline_s, 2),
                  seconds_to_cap=round(to_cap, 2))


FORK_LOOP = """
import os
while True:
    try:
        os.fork()  # parent and child both go on forking: every process spins on fork()
    except OSError:
        pass
"""


def test_a23_os_fork_loop_in_every_process_is_capped_and_a_concurrent_canary_runs(
        attack: Attack, client: Airlock, run_job: RunJob) -> None:
    record, baseline_s, canary_s, canary, to_cap = _bomb_with_canary(
        attack, client, run_job, 64, code=FORK_LOOP, limits={"timeout_s": 4, "pids": 64})

    evidence = record.evidence or {}
    assert record.verdict == "timeout" and evidence["pids_peak"] == 64, record.summary()
    assert evidence["pids_capped"] is True
    assert canary_s < max(3.0, 5 * baseline_s), (canary_s, baseline_s)
    attack.record("A23", "python: os.fork() in a loop in every process (pids cap 64, timeout "
                  "4 s), CPU-bound; a concurrent canary", "pids peak 64 = cap; timeout; the "
                  "canary finishes during the bomb", record, canary_during_s=round(canary_s, 2),
                  canary_during_wall_ms=canary.wall_ms, canary_baseline_s=round(baseline_s, 2),
                  seconds_to_cap=round(to_cap, 2))


# --- A24 memory bombs -------------------------------------------------------------------------

def test_a24_memory_bomb_row_python_a_x_times_10_to_the_10_is_oom_killed_at_4g(
        attack: Attack, worker: WorkerProcess) -> None:
    pids, rss = [worker.pid, *worker.pool_pids()], worker_rss(worker)
    t0 = time.monotonic()
    record = attack.job("a='x'*10**10", timeout_s=120)  # the fleet's default 4 GiB limit
    seconds = time.monotonic() - t0

    assert record.verdict == "oom" and record.exit_code == 137, record.summary()
    assert record.evidence is not None and record.evidence["oom_killed"] is True
    assert record.peak_memory_bytes is not None
    assert 4 * GiB - 64 * MiB <= record.peak_memory_bytes <= 4 * GiB + MiB
    assert [worker.pid, *worker.pool_pids()] == pids  # the worker and its pool untouched
    assert worker_rss(worker) - rss < 50 * MiB
    attack.record("A24", "python -c \"a='x'*10**10\" (10 GB string, default limit 4 GiB)",
                  "OOM-killed at the limit; verdict oom; the worker's processes are the same "
                  "and its memory did not grow", record, row="python -c \"a='x'*10**10\"",
                  contained_in_ms=record.wall_ms, submit_to_result_s=round(seconds, 2))


@pytest.mark.parametrize(("variant", "code", "memory"), [
    ("bytearray_8g", "b = bytearray(8 << 30)", 256 * MiB),
    ("dev_shm_fill", "open('/dev/shm/fill', 'wb').write(b'x' * (60 << 20))", 32 * MiB),
    ("tmpfs_fill", "f = open('/tmp/fill', 'wb')\nwhile True: f.write(b'x' * (1 << 20))",
     128 * MiB),
], ids=["bytearray_8g", "dev_shm_fill", "tmpfs_fill"])
def test_a24_memory_bomb_variants_are_oom_killed_at_their_limit(
        attack: Attack, variant: str, code: str, memory: int) -> None:
    record = attack.job(code, memory_bytes=memory, timeout_s=30)

    assert record.verdict == "oom", record.summary()
    assert record.evidence is not None and record.evidence["oom_killed"] is True
    assert record.peak_memory_bytes is not None and record.peak_memory_bytes <= memory + MiB
    attack.record("A24", f"{variant}: {code.splitlines()[-1]} under a {memory // MiB} MiB "
                  "limit (tmpfs and /dev/shm pages count against the job's memory)",
                  "OOM-killed at the limit; verdict oom", record, contained_in_ms=record.wall_ms)


# --- A25 busy loops ---------------------------------------------------------------------------

def test_a25_busy_loop_row_while_true_times_out(attack: Attack) -> None:
    record = attack.job("while true; do :; done", profile="shell", timeout_s=2)

    assert record.verdict == "timeout" and record.evidence is not None, record.summary()
    assert record.evidence["timed_out"] is True
    assert record.wall_ms is not None and 1900 <= record.wall_ms <= 3500
    assert record.cpu_ms is not None and record.cpu_ms <= 2 * record.wall_ms + 100
    attack.record("A25", "while true; do :; done (timeout 2 s, cpus 2)", "killed at the "
                  "timeout; verdict timeout; CPU time within cpus x wall", record,
                  row="while true; do :; done", cpu_per_wall=round(record.cpu_ms / record.wall_ms, 2))


SPIN_THREADS = r"""
#include <pthread.h>
static void *spin(void *arg) { volatile unsigned long x = 0; for (;;) x++; return arg; }
int main(void) {
    pthread_t t[16];
    for (int i = 0; i < 16; i++) pthread_create(&t[i], 0, spin, 0);
    pthread_join(t[0], 0);
    return 0;
}
"""


def test_a25_sixteen_spinning_threads_are_throttled_to_the_cpu_limit(
        attack: Attack, client: Airlock, run_job: RunJob) -> None:
    baseline_s, _ = timed_canary(run_job)
    spin = client.submit(code=SPIN_THREADS, profile="c", limits={"cpus": 0.5, "timeout_s": 4})
    wait_running(client, spin, settle_s=1.0)
    canary_s, _ = timed_canary(run_job)
    record = spin.wait(60)

    assert record.verdict == "timeout", record.summary()
    assert record.cpu_ms is not None and record.wall_ms is not None
    ratio = record.cpu_ms / record.wall_ms
    assert ratio <= 0.5 * 1.1, ratio  # 16 threads, half a core: throttled by the CFS quota
    assert canary_s < max(3.0, 5 * baseline_s), (canary_s, baseline_s)
    attack.record("A25", "16 spinning pthreads (C) under cpus=0.5, timeout 4 s; a concurrent "
                  "canary", f"throttled: cpu/wall = {ratio:.2f} (limit 0.5); killed at the "
                  "timeout; the canary's latency stays normal", record,
                  cpu_per_wall=round(ratio, 2), canary_during_s=round(canary_s, 2),
                  canary_baseline_s=round(baseline_s, 2))


# --- A26 lifetime escapes ---------------------------------------------------------------------

ESCAPE = r"""
setsid nohup sleep 1000001 >/dev/null 2>&1 &
sh -c 'trap "" TERM HUP INT; exec sleep 1000002' &
python3 -c '
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "1000003"])
    os._exit(0)
'
(trap '' TERM; while :; do sleep 1; done) &
sleep 0.3
echo "started: $(grep -laE '^sleep.100000[123]' /proc/[0-9]*/cmdline | wc -l)"
exit 0
"""


def test_a26_setsid_nohup_double_fork_and_sigterm_ignorers_die_with_the_job(
        attack: Attack) -> None:
    record = attack.job(ESCAPE, profile="shell", timeout_s=20)

    assert record.verdict == "ok" and record.stdout == "started: 3\n", record.summary()
    assert record.wall_ms is not None and record.wall_ms < 5000  # nothing waited on them
    survivors = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                 if (p.info["cmdline"] or [""])[-1:] in (["1000001"], ["1000002"], ["1000003"])]
    assert survivors == [], survivors
    attack.record("A26", "setsid nohup sleep &, a double-forked setsid daemon, SIGTERM-ignoring "
                  "children, then exit 0", "when the job's process ends the launcher (PID 1) "
                  "SIGKILLs every process and the container is removed: no process of the job "
                  "is left on the host", record)


# --- A27 disk fills ---------------------------------------------------------------------------

def test_a27_disk_fill_dd_row_meets_the_read_only_root(attack: Attack) -> None:
    record = attack.job("dd if=/dev/zero of=/fill bs=1M", profile="shell")

    assert record.verdict == "nonzero_exit" and "Read-only file system" in record.stderr
    attack.record("A27", "dd if=/dev/zero of=/fill bs=1M", "EROFS at once: the root is "
                  "read-only; each writable path stops at its own bound (the A27 rows below)", record,
                  row="dd if=/dev/zero of=/fill bs=1M")


FILL_EACH = r"""
fill() {
    dd if=/dev/zero of=$1 bs=1M 2>&1 \
        | grep -oE '^[0-9]+ bytes|No space left|quota exceeded|Permission denied' | tr '\n' ' '
    echo
}
for dir in /workspace /opt/venv /home/appuser /tmp /var/tmp /run /dev/shm; do
    echo "$dir: $(fill $dir/fill)"; rm -f $dir/fill
done
dd if=/dev/zero of=/workspace/half bs=1M count=40 2>/dev/null
echo "shared: $(fill /opt/venv/rest)"
exit 1
"""


def _free(path: str) -> int:
    return shutil.disk_usage(path).free


def test_a27_dd_into_each_writable_path_stops_at_its_bound(attack: Attack) -> None:
    free_root, free_volumes = _free("/"), _free(str(VOLUMES))
    record = attack.job(FILL_EACH, profile="shell", disk_bytes=64 * MiB, timeout_s=60)

    got = {}
    for line in record.stdout.splitlines():
        where, _, said = line.partition(": ")
        number = re.search(r"(\d+) bytes", said)
        got[where] = (int(number.group(1)) if number else 0, said)
    for path, bound in (("/workspace", 64 * MiB), ("/opt/venv", 64 * MiB),
                        ("/home/appuser", 64 * MiB), ("/tmp", GiB), ("/var/tmp", 512 * MiB),
                        ("/dev/shm", 64 * MiB)):
        written, said = got[path]
        assert bound - 2 * MiB <= written <= bound and ("No space" in said or "quota" in said), (
            path, said)
    assert "Permission denied" in got["/run"][1]  # root's 0755 tmpfs: not writable at all
    assert got["shared"][0] <= 24 * MiB, got["shared"]  # one bound for the three folders
    assert record.verdict == "disk_limit", record.summary()
    # The tmpfs fills (1.5 GiB) lived in memory: had they reached the host's disk, its free
    # space would have dropped by more than this (other programs write there too).
    assert abs(_free("/") - free_root) < 768 * MiB, (free_root, _free("/"))
    assert abs(_free(str(VOLUMES)) - free_volumes) < 256 * MiB
    attack.record("A27", "dd if=/dev/zero into /workspace, /opt/venv, /home/appuser, /tmp, "
                  "/var/tmp, /run, /dev/shm in turn (disk bound 64 MiB); then 40 MiB in "
                  "/workspace and the rest into /opt/venv", "each stops at its bound: the three "
                  "job folders share one 64 MiB btrfs quota (EDQUOT), /tmp 1 GiB, /var/tmp "
                  "512 MiB, /dev/shm 64 MiB (ENOSPC); /run is not writable; host free space "
                  "unchanged; verdict disk_limit", record,
                  written_mib={k: round(v[0] / MiB, 1) for k, v in got.items()})


WRITABLE = r"""
find / \( -path /proc -o -path /sys \) -prune -o -writable -print 2>/dev/null
for f in /etc/hosts /etc/resolv.conf /etc/hostname /etc/passwd; do
    (echo x >> $f) 2>/dev/null && echo "appended $f"
done
exit 0
"""
WRITABLE_EXPECTED = {  # the bounded folders, and character devices and links of /dev
    "/workspace", "/workspace/main.sh", "/opt/venv", "/home/appuser", "/tmp", "/var/tmp",
    "/dev/shm", "/dev/mqueue", "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
    "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts/ptmx", "/dev/fd",
    "/dev/stdout", "/dev/stderr",
    # The job's own output FIFOs (bounded by its output cap); its stdin FIFO is read-only to
    # it, so /dev/stdin is not writable.
    "/.airlock/out", "/.airlock/err",
}


def test_a27_a_job_can_write_nowhere_but_its_bounded_paths(attack: Attack) -> None:
    record = attack.job(WRITABLE, profile="shell", timeout_s=30)

    writable = set(record.stdout.split())
    assert record.verdict == "ok" and writable == WRITABLE_EXPECTED, writable ^ WRITABLE_EXPECTED
    attack.record("A27", "list everything the job user can write (find / -writable, /proc and "
                  "/sys aside); append to /etc/hosts, /etc/resolv.conf, /etc/hostname",
                  "only the three job folders (one quota), /tmp, /var/tmp, /dev/shm (sized "
                  "tmpfs) and /dev/mqueue (256 queues of 80 KiB at most, 800 KiB per uid) "
                  "plus /dev's character devices; /etc files refused", record)


INODES_BTRFS = r"""
import os
for i in range(10**7):
    try:
        os.close(os.open(f"/workspace/{i:0255d}", os.O_CREAT | os.O_WRONLY))
    except OSError as exc:
        print(i, exc.errno)
        raise SystemExit(1)
"""
INODES_TMPFS = INODES_BTRFS.replace("/workspace/{i:0255d}", "/tmp/{i}")


def test_a27_inode_exhaustion_stops_at_the_disk_and_memory_bounds(attack: Attack) -> None:
    on_btrfs = attack.job(INODES_BTRFS, disk_bytes=16 * MiB, timeout_s=60)
    on_tmpfs = attack.job(INODES_TMPFS, memory_bytes=64 * MiB, timeout_s=60)

    files, errno = map(int, on_btrfs.stdout.split())
    assert errno == 122 and on_btrfs.verdict == "disk_limit", on_btrfs.summary()  # EDQUOT
    assert on_tmpfs.verdict == "oom", on_tmpfs.summary()  # tmpfs inodes are the job's memory
    attack.record("A27", "inode exhaustion: empty files with 255-byte names in /workspace "
                  "(disk bound 16 MiB); empty files in /tmp (memory 64 MiB)",
                  f"btrfs metadata counts in the quota: EDQUOT after {files} files, verdict "
                  "disk_limit; tmpfs inodes are kernel memory charged to the job: verdict oom",
                  on_btrfs, files_created=files, tmpfs_verdict=on_tmpfs.verdict,
                  tmpfs_wall_ms=on_tmpfs.wall_ms)


SUBVOLUME = r"""
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
fd = os.open("/workspace", os.O_RDONLY)
for name, request in [("subvol_create", 0x5000940E), ("subvol_create_v2", 0x50009418),
                      ("snap_create", 0x50009401), ("snap_create_v2", 0x50009417),
                      ("upper_bits", 0xFFFFFFFF5000940E)]:
    arg = ctypes.create_string_buffer(b"escape", 4096)
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(16), ctypes.c_long(fd), ctypes.c_ulong(request), arg)
    print(name, 0 if ret == 0 else ctypes.get_errno())
dd = subprocess.run("dd if=/dev/zero of=/workspace/escape/fill bs=1M count=64 || "
                    "dd if=/dev/zero of=/workspace/fill bs=1M count=64", shell=True,
                    capture_output=True, text=True)
print("dd", " | ".join(dd.stderr.splitlines()))
"""


def test_a27_a_btrfs_subvolume_made_by_the_job_cannot_escape_the_bound(attack: Attack) -> None:
    before = subprocess.run(["btrfs", "subvolume", "list", str(VOLUMES)], capture_output=True,
                            text=True, check=True).stdout.count("\n")
    record = attack.job(SUBVOLUME, disk_bytes=16 * MiB, timeout_s=30)

    lines = dict(line.split(" ", 1) for line in record.stdout.splitlines())
    assert {k: v for k, v in lines.items() if k != "dd"} == {
        "subvol_create": "1", "subvol_create_v2": "1", "snap_create": "1",
        "snap_create_v2": "1", "upper_bits": "1"}, lines  # EPERM: the seccomp profile
    assert "quota exceeded" in lines["dd"], lines["dd"]
    after = subprocess.run(["btrfs", "subvolume", "list", str(VOLUMES)], capture_output=True,
                           text=True, check=True).stdout.count("\n")
    assert after <= before, (before, after)
    attack.record("A27", "btrfs subvolume/snapshot create ioctls on /workspace (a subvolume "
                  "is outside its parent's quota group: before the fix a job wrote 100 MiB "
                  "under a 32 MiB bound), also with the request's upper 32 bits set",
                  "EPERM for every request (seccomp, masked to 32 bits); the fill stops at the "
                  "16 MiB bound", record)


# --- A28 output floods ------------------------------------------------------------------------

def _containers_dir_bytes() -> int:
    total = 0
    for root, _, files in os.walk("/var/lib/docker/containers"):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def test_a28_yes_flood_is_cut_at_the_output_cap_with_worker_memory_bounded(
        attack: Attack, worker: WorkerProcess) -> None:
    rss, logs, worker_log = worker_rss(worker), _containers_dir_bytes(), worker.log_path.stat().st_size
    record = attack.job("yes", profile="shell", timeout_s=60)  # default cap 4 MiB

    assert record.verdict == "output_limit", record.summary()
    assert record.stdout_truncated and record.evidence is not None
    assert record.evidence["bytes_dropped"] > 0 and record.stdout_total == 4 * MiB
    assert len(record.stdout_bytes) <= MiB and set(record.stdout_bytes) == {ord("y"), ord("\n")}
    assert worker_rss(worker) - rss < 50 * MiB
    assert _containers_dir_bytes() - logs < MiB  # log driver none: no json log grew
    assert worker.log_path.stat().st_size - worker_log < 256 * 1024
    attack.record("A28", "yes (would print for a minute)", "killed once 4 MiB (the default "
                  "output cap) were relayed; 1 MiB kept in PostgreSQL with the truncation flag; "
                  "worker memory and host log files did not grow", record,
                  stdout_total=record.stdout_total)


LONG_LINE = """
import sys
chunk = b"x" * (1 << 24)
for _ in range(128):  # 2 GiB, no newline
    sys.stdout.buffer.write(chunk)
"""


def test_a28_a_2gb_line_without_newline_is_cut_and_worker_memory_stays_bounded(
        attack: Attack, worker: WorkerProcess) -> None:
    rss = worker_rss(worker)
    record = attack.job(LONG_LINE, output_bytes=64 * MiB, timeout_s=60)

    assert record.verdict == "output_limit" and record.stdout_truncated, record.summary()
    assert record.stdout_total == 64 * MiB and len(record.stdout_bytes) <= MiB
    assert b"\n" not in record.stdout_bytes
    assert worker_rss(worker) - rss < 100 * MiB
    attack.record("A28", "a 2 GiB line without a newline (output cap 64 MiB)", "cut at the "
                  "64 MiB cap, 1 MiB kept; the worker never buffers a line: its memory stays "
                  "bounded", record, stdout_total=record.stdout_total,
                  worker_rss_growth_mib=round((worker_rss(worker) - rss) / MiB, 1))


NASTY_BYTES = b"\x00\x1b[2J\x1b[31mred\x1b]0;title\x07\xff\xfe\xc3\x28\xed\xa0\x80\r\n"
NASTY = f"""
import sys
sys.stdout.buffer.write({NASTY_BYTES!r} * 1000)
sys.stderr.buffer.write({NASTY_BYTES!r})
"""


def test_a28_nul_ansi_and_invalid_utf8_are_stored_byte_for_byte(attack: Attack) -> None:
    record = attack.job(NASTY)

    assert record.verdict == "ok", record.summary()
    assert record.stdout_bytes == NASTY_BYTES * 1000 and record.stderr_bytes == NASTY_BYTES
    shown = record.to_json()
    assert shown["stdout_valid_utf8"] is False and "stdout_b64" in shown  # the exact bytes
    attack.record("A28", "NUL, ANSI escapes (clear screen, colour, window title), invalid "
                  "UTF-8 and CR on both streams", "stored byte for byte; text views replace "
                  "invalid UTF-8 and the JSON view adds base64 of the exact bytes; nothing is "
                  "interpreted", record)
