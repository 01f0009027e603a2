"""Pure checks of config/seccomp.json: no Docker needed.

The profile must give the same answers on every engine. Docker 20.10 drops
``defaultErrnoRet`` (its default becomes EPERM, plus runc's ENOSYS stub above the
highest syscall named), so every known syscall is named by some rule, and every
argument-filtered syscall has rules that cover all argument values: a call never
reaches the default action. A small evaluator below applies the rules the way
libseccomp does (conditions of one rule ANDed, 64-bit unsigned comparisons).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from config.seccomp import DEFAULT_PROFILE_PATH, for_engine, load_profile, profile_sha256

EPERM, ENOSYS = 1, 38
ALLOW, ERRNO = "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"
U64 = (1 << 64) - 1
CLONE_NS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
CLONE_NEWTIME = 0x80


def words(text: str) -> list[str]:
    return text.split()


MUST_REFUSE = words(
    """mount umount2 pivot_root chroot setns open_tree move_mount fsopen fsconfig fsmount
    fspick mount_setattr keyctl add_key request_key bpf perf_event_open userfaultfd io_uring_setup
    io_uring_enter io_uring_register ptrace process_vm_readv process_vm_writev pidfd_getfd kcmp
    open_by_handle_at name_to_handle_at kexec_load kexec_file_load init_module finit_module
    delete_module swapon swapoff reboot syslog acct settimeofday clock_settime adjtimex
    clock_adjtime quotactl quotactl_fd lookup_dcookie fanotify_init vhangup nfsservctl uselib
    ustat sysfs _sysctl
    iopl ioperm modify_ldt sethostname setdomainname"""
)
MUST_ENOSYS = words(
    """clone3 mbind set_mempolicy get_mempolicy migrate_pages move_pages
    set_mempolicy_home_node io_setup io_submit"""
)
ARG_FILTERED = {"clone", "unshare", "socket", "socketpair", "personality", "mknod", "mknodat", "ioctl"}
HARMLESS_PERSONALITY = {0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF}

Rule = dict[str, Any]


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(load_profile())
    return result


def rules_for(profile: dict[str, Any], name: str) -> list[Rule]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def _matches(cond: dict[str, Any], args: tuple[int, ...]) -> bool:
    value = args[cond["index"]] & U64
    op, a, b = cond["op"], cond["value"], cond.get("valueTwo", 0)
    return bool(
        {
            "SCMP_CMP_EQ": value == a,
            "SCMP_CMP_NE": value != a,
            "SCMP_CMP_GT": value > a,
            "SCMP_CMP_GE": value >= a,
            "SCMP_CMP_LT": value < a,
            "SCMP_CMP_LE": value <= a,
            "SCMP_CMP_MASKED_EQ": value & a == b,
        }[op]
    )


def outcome(profile: dict[str, Any], name: str, *args: int) -> str:
    """'allow', 'errno N', or 'DEFAULT'; fails if two rules with different actions match."""
    padded = (*args, 0, 0, 0, 0, 0, 0)[:6]
    found = {
        "allow" if r["action"] == ALLOW else f"errno {r['errnoRet']}"
        for r in rules_for(profile, name)
        if all(_matches(c, padded) for c in r.get("args", []))
    }
    assert len(found) <= 1, f"{name}{args}: conflicting rules {found}"
    return found.pop() if found else "DEFAULT"


def test_profile_parses_and_denies_by_default(profile: dict[str, Any]) -> None:
    assert profile["defaultAction"] == ERRNO
    assert profile["defaultErrnoRet"] == ENOSYS
    assert isinstance(profile["syscalls"], list) and profile["syscalls"]


def test_architectures_are_native_64_bit_only(profile: dict[str, Any]) -> None:
    # no SCMP_ARCH_X86 / X32: int $0x80 and x32 calls hit the bad-arch action
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]
    assert "archMap" not in profile


def test_rules_are_well_formed(profile: dict[str, Any]) -> None:
    for rule in profile["syscalls"]:
        assert rule["action"] in (ALLOW, ERRNO), rule
        assert rule["names"] and all(isinstance(n, str) and n for n in rule["names"]), rule
        if rule["action"] == ERRNO:
            assert rule["errnoRet"] in (EPERM, ENOSYS), rule  # explicit: 20.10 drops the default
        indexes = [c["index"] for c in rule.get("args", [])]
        # runc splits same-argument conditions into OR'ed rules: never rely on that
        assert len(indexes) == len(set(indexes)), rule
        assert not {"includes", "excludes"} & rule.keys(), rule


def test_no_syscall_is_both_unconditional_and_conditional(profile: dict[str, Any]) -> None:
    # libseccomp lets an unconditional rule supersede conditional ones for the same call
    unconditional = [n for r in profile["syscalls"] if not r.get("args") for n in r["names"]]
    conditional = {n for r in profile["syscalls"] if r.get("args") for n in r["names"]}
    assert len(unconditional) == len(set(unconditional)), "a name in two unconditional rules"
    assert not set(unconditional) & conditional
    assert conditional == ARG_FILTERED


@pytest.mark.parametrize("name", MUST_REFUSE)
def test_must_refuse_calls_get_eperm_and_are_never_allowed(
    profile: dict[str, Any], name: str
) -> None:
    rules = rules_for(profile, name)
    assert [(r["action"], r["errnoRet"], r.get("args")) for r in rules] == [(ERRNO, EPERM, None)]


@pytest.mark.parametrize("name", MUST_ENOSYS)
def test_calls_answered_as_not_implemented(profile: dict[str, Any], name: str) -> None:
    rules = rules_for(profile, name)
    assert [(r["action"], r["errnoRet"], r.get("args")) for r in rules] == [(ERRNO, ENOSYS, None)]


def test_clone_allow_rule_masks_every_namespace_flag(profile: dict[str, Any]) -> None:
    allows = [r for r in rules_for(profile, "clone") if r["action"] == ALLOW]
    assert len(allows) == 1
    (cond,) = allows[0]["args"]
    assert cond["index"] == 0 and cond["op"] == "SCMP_CMP_MASKED_EQ" and cond["valueTwo"] == 0
    for flag in CLONE_NS.values():
        assert cond["value"] & flag == flag


@pytest.mark.parametrize("flag", list(CLONE_NS))
def test_clone_and_unshare_with_a_namespace_flag_get_eperm(
    profile: dict[str, Any], flag: str
) -> None:
    others = [0, 0x11, 0x3D0F00, 0x100, 0x400 | 0x200]  # SIGCHLD, pthread flags, CLONE_FILES|FS
    for base in others:
        assert outcome(profile, "clone", base | CLONE_NS[flag]) == f"errno {EPERM}"
        assert outcome(profile, "unshare", base | CLONE_NS[flag]) == f"errno {EPERM}"
    assert outcome(profile, "unshare", CLONE_NEWTIME) == f"errno {EPERM}"


def test_clone_without_namespace_flags_is_allowed(profile: dict[str, Any]) -> None:
    # CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
    pthread = 0x3D0F00
    for flags in (17, pthread, 0x4111, 0x01200011, 1 << 40):
        assert outcome(profile, "clone", flags) == "allow"
    assert outcome(profile, "unshare", 0x400 | 0x200) == "allow"


def test_clone_and_unshare_cover_every_flag_combination(profile: dict[str, Any]) -> None:
    rng = random.Random(1)
    for _ in range(5000):
        flags = rng.getrandbits(64)
        assert outcome(profile, "clone", flags) != "DEFAULT"
        assert outcome(profile, "unshare", flags) != "DEFAULT"


def test_clone3_returns_enosys_so_glibc_falls_back_to_clone(profile: dict[str, Any]) -> None:
    assert outcome(profile, "clone3") == f"errno {ENOSYS}"


def test_socket_families(profile: dict[str, Any]) -> None:
    allowed = {(1, 0), (2, 0), (2, 6), (10, 17), (16, 0)}  # unix, inet, inet6, netlink route
    for family in range(0, 64):
        for proto in (0, 1, 6, 9, 17):
            expected = "allow" if (family, proto) in allowed or family in (1, 2, 10) else "errno 1"
            assert outcome(profile, "socket", family, 1, proto) == expected, (family, proto)
    assert outcome(profile, "socket", 38, 5, 0) == "errno 1"  # AF_ALG
    assert outcome(profile, "socket", 17, 3, 0x300) == "errno 1"  # AF_PACKET
    assert outcome(profile, "socket", (1 << 32) | 38, 5, 0) == "errno 1"  # upper bits set
    assert outcome(profile, "socketpair", 1, 1, 0) == "allow"
    assert outcome(profile, "socketpair", 2, 1, 0) == "errno 1"


def test_personality_allows_only_harmless_values(profile: dict[str, Any]) -> None:
    rng = random.Random(2)
    samples = {1 << b for b in range(64)} | {rng.getrandbits(32) for _ in range(3000)}
    samples |= {rng.getrandbits(64) for _ in range(1000)} | HARMLESS_PERSONALITY
    samples |= {0xDEADBEEF, 0x80000000, 0x0400000, 0x0040000, 0x6, 0xFFFFFFFE, 0x1FFFFFFFF}
    for value in samples:
        expected = "allow" if value in HARMLESS_PERSONALITY else "errno 1"
        assert outcome(profile, "personality", value) == expected, hex(value)


@pytest.mark.parametrize(("name", "mode_index"), [("mknod", 1), ("mknodat", 2)])
def test_mknod_allows_fifos_sockets_and_files_only(
    profile: dict[str, Any], name: str, mode_index: int
) -> None:
    allowed_types = {0, 0o010000, 0o100000, 0o140000}
    for file_type in range(0, 0o200000, 0o010000):
        for extra in (0o600, 0o7777, 1 << 20):
            args = [0, 0, 0, 0]
            args[mode_index] = file_type | extra
            expected = "allow" if file_type in allowed_types else "errno 1"
            assert outcome(profile, name, *args) == expected, oct(file_type)


# _IOW(0x94, nr, 4096-byte args): a subvolume or snapshot the job made would not belong to its
# volume's quota group, so its writes would escape the disk bound (unprivileged on btrfs).
BTRFS_SUBVOLUME_CREATE = {0x50009401, 0x5000940E, 0x50009417, 0x50009418}


def test_ioctl_refuses_only_the_btrfs_subvolume_creating_requests(profile: dict[str, Any]) -> None:
    # The kernel reads the request as 32 bits: upper bits must not slip a request past.
    rng = random.Random(3)
    uppers = (0, 0xFFFFFFFF << 32, rng.getrandbits(32) << 32)
    samples = {0x5000_9400 | low for low in range(256)} | {rng.getrandbits(64) for _ in range(3000)}
    samples |= {r ^ (1 << b) for r in BTRFS_SUBVOLUME_CREATE for b in range(64)}
    samples |= {0x541B, 0x5401, 0x80086601, 0x40049409, 0xC0189436}  # FIONREAD, TCGETS, FICLONE..
    for value in samples:
        for upper in uppers:
            request = (value & 0xFFFFFFFF) | upper
            expected = "errno 1" if value & 0xFFFFFFFF in BTRFS_SUBVOLUME_CREATE else "allow"
            assert outcome(profile, "ioctl", 3, request) == expected, hex(request)


def test_golden_table_matches_the_profile_design() -> None:
    golden = json.loads((Path(__file__).parents[1] / "attacks" / "golden_errnos.json").read_text())
    assert set(golden.values()) <= {0, EPERM, ENOSYS}
    assert all(v == 0 for k, v in golden.items() if k.startswith("ok_"))
    assert all(v != 0 for k, v in golden.items() if not k.startswith("ok_"))
    for name in (
        "io_uring_setup",
        "socket_af_alg",
        "unshare_newuser",
        "clone_newuser",
        "setns",
        "mount",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "ptrace_seize",
        "kexec_load",
        "init_module",
        "reboot",
        "syslog",
        "personality_read_implies_exec",
        "btrfs_subvol_create",
        "btrfs_subvol_create_upper_bits",
    ):
        assert golden[name] == EPERM, name
    assert golden["clone3"] == ENOSYS


def test_load_profile_reads_the_default_or_a_given_path(tmp_path: Path) -> None:
    assert load_profile() == DEFAULT_PROFILE_PATH.read_text(encoding="utf-8")
    other = tmp_path / "p.json"
    other.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}', encoding="utf-8")
    assert load_profile(other) == other.read_text(encoding="utf-8")
    assert load_profile(str(other)) == load_profile(other)


def test_hash_is_stable_and_is_the_sha256_of_the_text() -> None:
    text = load_profile()
    assert profile_sha256(text) == profile_sha256(load_profile())
    assert profile_sha256(text) == hashlib.sha256(DEFAULT_PROFILE_PATH.read_bytes()).hexdigest()
    assert profile_sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert profile_sha256(text + " ") != profile_sha256(text)


# --- the text handed to the engine (for_engine) ---------------------------------------------


def _rules(profile: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "comment"} for r in profile["syscalls"]]


@pytest.mark.parametrize(("machine", "arches"), [
    ("x86_64", ["SCMP_ARCH_X86_64"]),
    ("aarch64", ["SCMP_ARCH_AARCH64"]),
    ("arm64", ["SCMP_ARCH_AARCH64"]),
])
def test_the_engine_gets_the_same_rules_for_this_machines_abi_only(
        profile: dict[str, Any], machine: str, arches: list[str]) -> None:
    sent = json.loads(for_engine(load_profile(), machine))
    assert sent["architectures"] == arches
    assert _rules(sent) == _rules(profile)  # same rules, same order: only comments dropped
    assert {k: v for k, v in sent.items() if k not in ("syscalls", "architectures")} == {
        k: v for k, v in profile.items() if k not in ("syscalls", "architectures", "comment")}
    assert "comment" not in json.dumps(sent)


def test_the_engine_text_is_compact_and_much_smaller() -> None:
    text = for_engine(load_profile(), "x86_64")
    assert "\n" not in text and ", " not in text
    assert len(text) < 0.7 * len(load_profile())


def test_every_abi_the_kernel_has_stays_listed() -> None:
    # A profile that filters i386 and x32 calls keeps doing so: those ABIs are reachable on an
    # x86_64 kernel, so their filters are kept; only aarch64's (never consulted) is dropped.
    text = json.dumps({"defaultAction": ERRNO, "syscalls": [],
                       "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                                         "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]})
    assert json.loads(for_engine(text, "x86_64"))["architectures"] == [
        "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert json.loads(for_engine(text, "aarch64"))["architectures"] == [
        "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


@pytest.mark.parametrize("text", [
    "not json", "[1, 2]", '"a string"',
])
def test_text_that_is_not_a_profile_object_is_handed_on_as_given(text: str) -> None:
    assert for_engine(text, "x86_64") == text


def test_an_unknown_machine_or_no_runnable_arch_keeps_the_list() -> None:
    text = json.dumps({"defaultAction": ERRNO, "architectures": ["SCMP_ARCH_RISCV64"]})
    assert json.loads(for_engine(text, "x86_64"))["architectures"] == ["SCMP_ARCH_RISCV64"]
    both = load_profile()
    assert json.loads(for_engine(both, "riscv64"))["architectures"] == [
        "SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]


def test_the_settings_hand_the_engine_text_and_its_hash_names_it(tmp_path: Path) -> None:
    from config.settings import Settings

    s = Settings(database_url="postgresql+psycopg://x@127.0.0.1/x")
    assert s.seccomp_json == for_engine(load_profile())
    other = tmp_path / "p.json"
    other.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "comment": "x"}', encoding="utf-8")
    custom = Settings(database_url="postgresql+psycopg://x@127.0.0.1/x", seccomp_profile=str(other))
    assert custom.seccomp_json == '{"defaultAction":"SCMP_ACT_ALLOW"}'
    assert profile_sha256(custom.seccomp_json) != profile_sha256(other.read_text())
