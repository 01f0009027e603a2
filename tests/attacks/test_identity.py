"""A35, A36: jobs cannot hurt each other through the kernel's per-user counters, and cannot
make their record lie.

A35: each running job has a kernel identity of its own (workers/slots.py). A hog job takes
one per-user counter to its limit and holds it; a job started beside it on the same worker
must still get that resource. (The attack suite runs a second time with the warm pool on:
scripts/test.sh, so each pair also runs pooled.)

A36: the verdict comes from the launcher's status pipe and the kernel's counters, never from
an exit status the job chose (workers/watch.py, workers/verdict.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.client import Airlock
from tests.attacks.conftest import Attack
from tests.attacks.test_privilege import FOREIGN_ABI

pytestmark = [pytest.mark.integration, pytest.mark.attacks]
HOG = (Path(__file__).parent / "probes" / "per_user.c").read_text()
HOLD_S = 20  # the hog's hold: ended by cancelling it once the victim has its answer
EAGAIN, EMFILE, ENOMEM, ENOSPC, EPERM = 11, 24, 12, 28, 1

VICTIM = r"""
import ctypes, fcntl, json, os, signal
libc = ctypes.CDLL(None, use_errno=True)
def result(ok, detail):
    print(json.dumps({"ok": bool(ok), "detail": detail}))
def errno_of(value):
    return 0 if value >= 0 else ctypes.get_errno()
what = WHAT
if what == "inotify_instances":
    fd = libc.inotify_init1(0)
    result(fd >= 0, errno_of(fd))
elif what == "inotify_watches":
    open("/workspace/f", "w").close()
    fd = libc.inotify_init1(0)
    wd = libc.inotify_add_watch(fd, b"/workspace/f", 2)
    result(wd >= 0, errno_of(wd))
elif what == "epoll_watches":
    import asyncio
    asyncio.run(asyncio.sleep(0))  # asyncio's selector is an epoll: it died with ENOSPC
    ep, r = libc.epoll_create1(0), os.eventfd(0)
    event = (ctypes.c_uint32 * 3)(1, 0, 0)
    result(libc.epoll_ctl(ep, 1, r, event) == 0, ctypes.get_errno())
elif what == "mqueue_bytes":
    rt = ctypes.CDLL("librt.so.1", use_errno=True)
    attr = (ctypes.c_long * 8)(0, 10, 8192, 0, 0, 0, 0, 0)
    fd = rt.mq_open(b"/victim", os.O_CREAT | os.O_RDWR, 0o600, attr)
    result(fd >= 0, errno_of(fd))
elif what == "sigpending":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
    queued = libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), 0)
    result(queued == 0, errno_of(queued))
elif what == "shm_lock":
    shm = libc.shmget(0, 1 << 20, 0o1600)
    locked = libc.shmctl(shm, 11, None) if shm >= 0 else -1
    result(locked == 0, errno_of(locked))
elif what == "pipe_pages":
    r, w = os.pipe()
    size = fcntl.fcntl(w, 1032)  # F_GETPIPE_SZ: 8 KiB when its user is over the soft limit
    result(size == 65536, size)
"""
# Each resource, with the errno the hog's last try must have met (it reached the limit).
RESOURCES = {
    "inotify_instances": {EMFILE}, "inotify_watches": {ENOSPC}, "epoll_watches": {ENOSPC},
    "mqueue_bytes": {EMFILE, ENOMEM}, "sigpending": {EAGAIN}, "shm_lock": {ENOMEM, EPERM},
    "pipe_pages": {EMFILE, EPERM},
}


@pytest.mark.parametrize("what", sorted(RESOURCES))
def test_a35_a_job_holding_a_per_user_counter_costs_a_concurrent_job_nothing(
        attack: Attack, client: Airlock, what: str) -> None:
    hog = client.submit(argv=["sh", "-c", f"gcc -O2 -o /workspace/hog hog.c -lrt &&"
                                          f" exec /workspace/hog {what} {HOLD_S}"],
                        files={"hog.c": HOG}, limits={"timeout_s": 120}, label=f"hog {what}")
    held = None
    for event in hog.events():
        if event.kind == "stdout" and event.data.startswith(b"held "):
            held = event.data.decode().split()
            break
        assert event.kind != "end", f"the hog ended before holding: {event.summary}"
    assert held is not None and held[1] == what
    count, refusal = int(held[2]), int(held[3])
    assert count > 0 and refusal in RESOURCES[what], held  # at its limit, held

    victim = client.submit(code=VICTIM.replace("WHAT", repr(what)),
                           limits={"timeout_s": 60}).wait(90)
    hog.cancel()
    hogged = hog.wait(60)

    assert victim.verdict == "ok", victim.summary() + victim.stderr
    answer = json.loads(victim.stdout)
    assert answer["ok"], (what, answer)
    assert hogged.verdict == "cancelled", hogged.summary()
    hog_uid, victim_uid = (r.provenance["uid"] for r in (hogged, victim)
                           if r.provenance is not None)
    assert hog_uid != victim_uid
    attack.record("A35", f"a hog job takes {what} to its per-user limit and holds it; a second "
                  "job runs beside it on the same worker",
                  f"the hog held {count} (its next try: errno {refusal}); the concurrent job "
                  f"got {what} at once (uids {hog_uid} and {victim_uid})", victim,
                  held=count, refusal_errno=refusal)


FORGED = {  # the job's own exit status, shaped like the statuses of a kill
    137: "import os\nb = bytearray(60 << 20)\nos._exit(137)",  # SIGKILL's, after memory use
    139: "import os\nos._exit(139)",  # SIGSEGV's
    159: "import os\nos._exit(159)",  # SIGSYS's: what a seccomp kill looks like
}


@pytest.mark.parametrize("status", sorted(FORGED))
def test_a36_an_exit_status_shaped_like_a_kill_is_only_an_exit_status(
        attack: Attack, status: int) -> None:
    record = attack.job(FORGED[status], memory_bytes=64 << 20)

    assert (record.verdict, record.exit_code, record.signal) == ("nonzero_exit", status, None)
    evidence = record.evidence or {}
    assert evidence["ended"] == "exit" and not evidence["seccomp_killed"]
    assert not evidence["oom_killed"] and evidence["oom_events"] == 0
    attack.record("A36", f"os._exit({status}) by itself (shaped like a kill)",
                  f"nonzero_exit, exit {status}, no signal, no OOM, not seccomp-killed: the "
                  "launcher saw an exit", record)


REAL = {  # (code, profile, verdict, signal)
    "oom": ("a = bytearray(1 << 30)", "python", "oom", 9),
    "kill -9": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "python", "signaled", 9),
    # A foreign syscall ABI (int 0x80 from x86_64): the profile's kill action, SIGSYS.
    "seccomp kill": (FOREIGN_ABI, "c", "signaled", 31),
}


@pytest.mark.parametrize("kind", sorted(REAL))
def test_a36_a_real_kill_is_said_with_the_kernels_evidence(attack: Attack, kind: str) -> None:
    code, profile, verdict, signal = REAL[kind]
    record = attack.job(code, profile=profile, memory_bytes=64 << 20, timeout_s=60)

    assert record.verdict == verdict, record.summary() + record.stderr
    assert record.signal == signal
    evidence = record.evidence or {}
    assert evidence["ended"] == "signal"
    if kind == "oom":
        assert evidence["oom_events"] > 0 or evidence["oom_killed"]
    assert evidence["seccomp_killed"] is (kind == "seccomp kill")
    attack.record("A36", f"a real {kind}", f"{verdict}, signal {signal}"
                  + (", seccomp_killed" if kind == "seccomp kill" else "")
                  + (f", the kernel's OOM count {evidence['oom_events']}" if kind == "oom" else ""),
                  record)
