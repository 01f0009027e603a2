"""Syscall probe: run INSIDE a job container (stdlib only, x86_64 syscall numbers).

Attempts each call that Airlock's seccomp profile must refuse, with harmless
arguments, and prints one JSON object ``{name: result}`` where result is 0 when
the call succeeded, the errno when it failed, or ``-signal`` when the attempt
was killed. Each attempt runs in its own forked child, so even a call that
were wrongly allowed (unshare, personality, ptrace) cannot change the probe.

Arguments are chosen so that nothing happens even with full privileges:
reboot with an invalid magic, syslog reading 0 bytes, kexec with no segments,
mount of a nonexistent device, setns/pidfd_getfd on fd -1, and so on. A few
``ok_*`` controls must succeed: they catch a profile that refuses too much.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable

if platform.machine() != "x86_64":  # the numbers below are x86_64's
    print(json.dumps({"error": f"unsupported machine {platform.machine()}"}))
    sys.exit(2)

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

SIGCHLD = 17
CLONE_NS = {
    "newns": 0x00020000,
    "newcgroup": 0x02000000,
    "newuts": 0x04000000,
    "newipc": 0x08000000,
    "newuser": 0x10000000,
    "newpid": 0x20000000,
    "newnet": 0x40000000,
}
SCRATCH = "/tmp/airlock-probe"
Arg = int | bytes | None | ctypes.Array[ctypes.c_char] | ctypes.c_void_p
CArg = ctypes.c_long | ctypes.c_char_p | ctypes.c_void_p | ctypes.Array[ctypes.c_char]


def _arg(value: Arg) -> CArg:
    if isinstance(value, bytes) or value is None:
        return ctypes.c_char_p(value)
    if isinstance(value, int):
        return ctypes.c_long(value)
    return value


def raw(nr: int, *args: Arg) -> int:
    """syscall(nr, args...): 0 or the return value on success, -errno on failure."""
    ctypes.set_errno(0)
    ret = LIBC.syscall(ctypes.c_long(nr), *(_arg(a) for a in args))
    return -ctypes.get_errno() if ret == -1 else ret


def call(nr: int, *args: Arg) -> int:
    """A probe body: the errno of the call, or 0 when it succeeded."""
    ret = raw(nr, *args)
    return -ret if ret < 0 else 0


def spawn_call(nr: int, *args: Arg) -> int:
    """For clone-like calls: a child created by mistake exits at once."""
    ret = raw(nr, *args)
    if ret == 0:
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0)
        return 0
    return -ret


def _bind(fn: Callable[..., int], *args: Arg) -> Callable[[], int]:
    return lambda: fn(*args)


def in_child(body: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            code = body()
        finally:
            os._exit(min(code, 254))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def clone_args(flags: int) -> ctypes.Array[ctypes.c_char]:
    """struct clone_args (v0, 64 bytes): flags, pidfd, child_tid, parent_tid, exit_signal, ..."""
    buf = ctypes.create_string_buffer(64)
    ctypes.c_uint64.from_buffer(buf, 0).value = flags
    ctypes.c_uint64.from_buffer(buf, 32).value = SIGCHLD
    return buf


def iovec(buf: ctypes.Array[ctypes.c_char]) -> ctypes.Array[ctypes.c_char]:
    vec = ctypes.create_string_buffer(16)
    ctypes.c_uint64.from_buffer(vec, 0).value = ctypes.addressof(buf)
    ctypes.c_uint64.from_buffer(vec, 8).value = len(buf)
    return vec


def btrfs_ioctl(request: int) -> int:
    """ioctl(dir, request, zeroed args) on the scratch dir (tmpfs: ENOTTY if it got through)."""
    fd = os.open(SCRATCH, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return call(16, fd, request, ctypes.create_string_buffer(b"airlock-subvol", 4096))
    finally:
        os.close(fd)


def reached_kernel(request: int) -> Callable[[], int]:
    """0 when the request got past the filter (tmpfs answers ENOTTY), else the errno."""
    return lambda: 0 if btrfs_ioctl(request) == 25 else btrfs_ioctl(request)


def pipe_ioctl_fionread() -> int:
    r, w = os.pipe()
    try:
        return call(16, r, 0x541B, ctypes.create_string_buffer(8))
    finally:
        os.close(r)
        os.close(w)


def probes(victim: int) -> dict[str, Callable[[], int]]:
    """name -> body; victim is a sleeping sibling used as the target of ptrace-like calls."""
    shared = ctypes.create_string_buffer(b"airlock", 8)  # same address in the victim (fork)
    tmp_x = f"{SCRATCH}/x".encode()
    nodev = b"/nonexistent-airlock"
    p: dict[str, Callable[[], int]] = {
        # io_uring: would be EFAULT/EBADF if it reached the kernel
        "io_uring_setup": lambda: call(425, 1, None),
        "io_uring_enter": lambda: call(426, -1, 0, 0, 0, None, 0),
        "io_uring_register": lambda: call(427, -1, 0, None, 0),
        # sockets: socket(family, type, protocol)
        "socket_af_alg": lambda: call(41, 38, 5, 0),
        "socket_af_packet": lambda: call(41, 17, 3, 0x0300),
        "socket_af_vsock": lambda: call(41, 40, 1, 0),
        "socket_af_key": lambda: call(41, 15, 3, 2),
        "socket_af_xdp": lambda: call(41, 44, 3, 0),
        "socket_netlink_audit": lambda: call(41, 16, 3, 9),
        "socket_inet_raw": lambda: call(41, 2, 3, 1),
        "socket_inet6_raw": lambda: call(41, 10, 3, 58),
        "socket_inet_packet_type": lambda: call(41, 2, 10, 0x0300),
        # namespaces
        **{f"unshare_{n}": _bind(call, 272, f) for n, f in CLONE_NS.items()},
        "unshare_newtime": lambda: call(272, 0x80),
        **{
            f"clone_{n}": _bind(spawn_call, 56, f | SIGCHLD, 0, 0, 0, 0)
            for n, f in CLONE_NS.items()
        },
        "clone3": lambda: spawn_call(435, clone_args(0), 64),
        "clone3_newuser": lambda: spawn_call(435, clone_args(CLONE_NS["newuser"]), 64),
        "setns": lambda: call(308, -1, 0),
        # mounts and roots
        "mount": lambda: call(165, nodev, tmp_x, b"ext4", 1, None),
        "umount2": lambda: call(166, tmp_x, 0),
        "pivot_root": lambda: call(155, nodev, nodev + b"2"),
        "chroot": lambda: call(161, nodev),
        "open_tree": lambda: call(428, -100, nodev, 0),
        "move_mount": lambda: call(429, -1, b"", -1, b"", 0),
        "fsopen": lambda: call(430, b"airlock-nofs", 0),
        "fsconfig": lambda: call(431, -1, 0, None, None, 0),
        "fsmount": lambda: call(432, -1, 0, 0),
        "fspick": lambda: call(433, -100, nodev, 0),
        "mount_setattr": lambda: call(442, -1, b"", 0, None, 0),
        # keyrings
        "keyctl": lambda: call(250, 0, -1, 0),
        "add_key": lambda: call(248, b"airlock-notype", b"d", None, 0, -1),
        "request_key": lambda: call(249, b"airlock-notype", b"d", None, 0),
        # bpf, perf, userfaultfd
        "bpf": lambda: call(321, 0, None, 0),
        "perf_event_open": lambda: call(298, None, 0, -1, -1, 0),
        "userfaultfd": lambda: call(323, 1),  # UFFD_USER_MODE_ONLY: allowed unprivileged
        # other processes
        "ptrace_traceme": lambda: call(101, 0, 0, 0, 0),
        "ptrace_seize": lambda: call(101, 0x4206, victim, 0, 0),
        "process_vm_readv": lambda: call(310, victim, iovec(shared), 1, iovec(shared), 1, 0),
        "process_vm_writev": lambda: call(311, victim, iovec(shared), 1, iovec(shared), 1, 0),
        "pidfd_getfd": lambda: call(438, -1, 0, 0),
        "kcmp": lambda: call(312, os.getpid(), victim, 0, 0, 0),
        # file handles
        "open_by_handle_at": lambda: call(304, -100, None, 0),
        "name_to_handle_at": lambda: call(303, -100, b"/", None, None, 0),
        # kernel code and machine state
        "kexec_load": lambda: call(246, 0, 0, None, 0),
        "kexec_file_load": lambda: call(320, -1, -1, 0, None, 0),
        "init_module": lambda: call(175, None, 0, b""),
        "finit_module": lambda: call(313, -1, b"", 0),
        "delete_module": lambda: call(176, b"airlock_no_such_module", os.O_NONBLOCK),
        "create_module": lambda: call(174, None, 0),
        "get_kernel_syms": lambda: call(177, None),
        "query_module": lambda: call(178, None, 0, None, 0, None),
        "swapon": lambda: call(167, nodev, 0),
        "swapoff": lambda: call(168, nodev),
        "reboot": lambda: call(169, 0, 0, 0, None),  # invalid magic
        "syslog": lambda: call(103, 3, None, 0),  # read all, 0 bytes
        "acct": lambda: call(163, None),
        "settimeofday": lambda: call(164, None, None),  # both NULL: a no-op if allowed
        "clock_settime": lambda: call(227, 0, None),
        "adjtimex": lambda: call(159, None),
        "clock_adjtime": lambda: call(305, 0, None),
        "quotactl": lambda: call(179, 0x800005, nodev, 0, None),  # Q_GETINFO
        "quotactl_fd": lambda: call(443, -1, 0x800005, 0, None),
        "lookup_dcookie": lambda: call(212, 0, None, 0),
        "fanotify_init": lambda: call(300, 0x200, 0),  # FAN_REPORT_FID: allowed unprivileged
        "fanotify_mark": lambda: call(301, -1, 0, 0, -100, None),
        "vhangup": lambda: call(153),
        "nfsservctl": lambda: call(180, 0, None, None),
        "uselib": lambda: call(134, nodev),
        "ustat": lambda: call(136, 0, None),
        "sysfs": lambda: call(139, 3),
        "_sysctl": lambda: call(156, None),
        "iopl": lambda: call(172, 0),  # lowering to 0 needs no privilege
        "ioperm": lambda: call(173, 0x80, 1, 0),  # turning access off needs none either
        "modify_ldt": lambda: call(154, 0, ctypes.create_string_buffer(16), 16),
        "sethostname": lambda: call(170, b"x" * 65, 65),
        "setdomainname": lambda: call(171, b"x" * 65, 65),
        # personality: only 0, PER_LINUX32, UNAME26 and the 0xffffffff query
        "personality_read_implies_exec": lambda: call(135, 0x0400000),
        "personality_addr_no_randomize": lambda: call(135, 0x0040000),
        "personality_mmap_page_zero": lambda: call(135, 0x0100000),
        "personality_per_bsd": lambda: call(135, 0x0006),
        "personality_0xdeadbeef": lambda: call(135, 0xDEADBEEF),
        "personality_bit31_only": lambda: call(135, 0x80000000),
        "personality_above_32_bits": lambda: call(135, 1 << 32),  # the kernel would read 0
        # device nodes: character device, overlayfs whiteout (0:0, allowed by the kernel)
        "mknod_char_device": lambda: call(259, -100, f"{SCRATCH}/chr".encode(), 0o020600, 0x0103),
        "mknod_block_device": lambda: call(259, -100, f"{SCRATCH}/blk".encode(), 0o060600, 0x0700),
        "mknod_whiteout": lambda: call(259, -100, f"{SCRATCH}/wh".encode(), 0o020600, 0),
        "mknod_dir_type": lambda: call(259, -100, f"{SCRATCH}/dir".encode(), 0o040700, 0),
        "mknod_old_char_device": lambda: call(133, f"{SCRATCH}/chr2".encode(), 0o020600, 0x0103),
        "socketpair_inet": lambda: call(53, 2, 1, 0, ctypes.create_string_buffer(8)),
        # NUMA and Linux AIO: answered as by a kernel without them
        "mbind": lambda: call(237, 0, 0, 0, None, 0, 0),
        "set_mempolicy": lambda: call(238, 0, None, 0),
        "get_mempolicy": lambda: call(239, None, None, 0, 0, 0),
        "migrate_pages": lambda: call(256, 0, 0, None, None),
        "move_pages": lambda: call(279, 0, 0, None, None, None, 0),
        "io_setup": lambda: call(206, 1, ctypes.create_string_buffer(8)),
        "process_madvise": lambda: call(440, -1, None, 0, 0, 0),
        # btrfs subvolumes made by the job would escape its volume's quota group
        "btrfs_snap_create": lambda: btrfs_ioctl(0x50009401),
        "btrfs_subvol_create": lambda: btrfs_ioctl(0x5000940E),
        "btrfs_snap_create_v2": lambda: btrfs_ioctl(0x50009417),
        "btrfs_subvol_create_v2": lambda: btrfs_ioctl(0x50009418),
        "btrfs_subvol_create_upper_bits": lambda: btrfs_ioctl(0xFFFFFFFF5000940E),
        # newer than the profile's libseccomp, and a number no kernel has
        "mseal": lambda: call(462, 0, 0, 0),
        "nr_999": lambda: call(999),
        # controls: ordinary uses that must keep working
        "ok_clone_plain": lambda: spawn_call(56, SIGCHLD, 0, 0, 0, 0),
        "ok_unshare_files": lambda: call(272, 0x400),
        "ok_socket_unix": lambda: call(41, 1, 1, 0),
        "ok_socket_inet": lambda: call(41, 2, 1, 0),
        "ok_socket_inet6": lambda: call(41, 10, 2, 0),
        "ok_socket_netlink_route": lambda: call(41, 16, 3, 0),
        "ok_socketpair_unix": lambda: call(53, 1, 1, 0, ctypes.create_string_buffer(8)),
        "ok_personality_query": lambda: call(135, 0xFFFFFFFF),
        "ok_personality_linux32": lambda: call(135, 0x0008),
        "ok_mkfifo": lambda: call(259, -100, f"{SCRATCH}/fifo".encode(), 0o010600, 0),
        "ok_getpid": lambda: call(39),
        "ok_ioctl_fionread": pipe_ioctl_fionread,
        "ok_ioctl_btrfs_neighbour": reached_kernel(0x5000940F),
    }
    return p


def _victim() -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    return pid


def main() -> None:
    os.makedirs(f"{SCRATCH}/x", exist_ok=True)
    victim = _victim()
    try:
        results = {name: in_child(body) for name, body in probes(victim).items()}
    finally:
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
