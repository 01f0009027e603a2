"""The agent profile's seccomp filter (config/agent_seccomp.py): derived from config/seccomp.json,
differing only where bubblewrap needs it. No Docker needed: the rules are evaluated as libseccomp
would (tests/unit/test_seccomp_profile.py's evaluator)."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from config.agent_seccomp import ADMITTED_CALLS, ADMITTED_FLAGS, agent_profile, rule_diff
from config.seccomp import for_engine, load_profile, profile_sha256
from tests.unit.test_seccomp_profile import CLONE_NEWTIME, CLONE_NS, MUST_REFUSE, outcome

EPERM = "errno 1"
ADMITTED = ("CLONE_NEWUSER", "CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET")
STILL_REFUSED = ("CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC")
# What the outer filter must keep refusing to a job of the agent profile (ATTACKS.md A40).
OUTER_REFUSED = ("setns", "keyctl", "bpf", "io_uring_setup", "fsopen", "fsmount", "open_tree",
                 "move_mount", "mount_setattr", "chroot", "add_key", "perf_event_open", "ptrace")


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(load_profile())
    return result


@pytest.fixture(scope="module")
def agent() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(agent_profile(load_profile()))
    return result


def every_name(profile: dict[str, Any]) -> set[str]:
    return {n for r in profile["syscalls"] for n in r["names"]}


def test_user_mount_pid_and_net_namespaces_are_admitted_alone_or_together(
        agent: dict[str, Any]) -> None:
    flags = [CLONE_NS[f] for f in ADMITTED]
    for f in flags:
        assert outcome(agent, "clone", f | 17) == "allow"
        assert outcome(agent, "unshare", f) == "allow"
    assert outcome(agent, "unshare", ADMITTED_FLAGS) == "allow"  # bwrap's --unshare-user/pid/net
    assert outcome(agent, "clone", ADMITTED_FLAGS | 17) == "allow"


@pytest.mark.parametrize("flag", STILL_REFUSED)
def test_cgroup_uts_and_ipc_namespaces_stay_refused_even_beside_admitted_ones(
        agent: dict[str, Any], flag: str) -> None:
    for extra in (0, CLONE_NS["CLONE_NEWUSER"], ADMITTED_FLAGS):
        assert outcome(agent, "clone", CLONE_NS[flag] | extra | 17) == EPERM
        assert outcome(agent, "unshare", CLONE_NS[flag] | extra) == EPERM
    assert outcome(agent, "unshare", CLONE_NEWTIME) == EPERM


def test_every_flag_combination_still_meets_exactly_one_rule(agent: dict[str, Any]) -> None:
    rng = random.Random(4)
    for _ in range(5000):
        flags = rng.getrandbits(64)
        for name in ("clone", "unshare"):
            got = outcome(agent, name, flags)  # asserts no two rules disagree
            refused = flags & sum(CLONE_NS[f] for f in STILL_REFUSED) or (
                name == "unshare" and flags & CLONE_NEWTIME)
            assert got == (EPERM if refused else "allow"), (name, hex(flags))


def test_mount_pivot_root_and_umount2_are_allowed(agent: dict[str, Any]) -> None:
    for name in ADMITTED_CALLS:
        assert outcome(agent, name) == "allow"


@pytest.mark.parametrize("name", OUTER_REFUSED)
def test_the_rest_of_the_mount_and_namespace_surface_stays_refused(
        agent: dict[str, Any], name: str) -> None:
    assert outcome(agent, name) == EPERM
    assert outcome(agent, "clone3") == "errno 38"


def test_nothing_else_changes(base: dict[str, Any], agent: dict[str, Any]) -> None:
    # Every syscall but the admitted ones and clone/unshare answers as in the base profile,
    # for a spread of arguments (socket families, ioctls, personality, mknod).
    rng = random.Random(5)
    samples = [tuple(rng.getrandbits(64) for _ in range(3)) for _ in range(40)]
    samples += [(1, 1, 0), (17, 3, 0x300), (38, 5, 0), (16, 3, 12), (3, 0x5000940E)]
    changed = {"clone", "unshare", *ADMITTED_CALLS}
    assert every_name(base) == every_name(agent)
    for name in sorted(every_name(base) - changed):
        for args in samples:
            assert outcome(agent, name, *args) == outcome(base, name, *args), (name, args)
    assert sorted(n for n in MUST_REFUSE if outcome(agent, n) != EPERM) == sorted(ADMITTED_CALLS)
    assert {k: v for k, v in agent.items() if k not in ("syscalls", "comment")} == {
        k: v for k, v in base.items() if k not in ("syscalls", "comment")}


def test_the_diff_is_the_bubblewrap_minimum() -> None:
    base = load_profile()
    lines = rule_diff(base, agent_profile(base))
    assert sorted(line[0] for line in lines) == ["+"] * 3 + ["-"] * 11
    assert "+ mount,pivot_root,umount2(*) -> ALLOW" in lines
    assert "+ clone(arg0 & 0xe000000 == 0x0) -> ALLOW" in lines
    assert "+ unshare(arg0 & 0xe000080 == 0x0) -> ALLOW" in lines
    assert "- ['mount', 'pivot_root', 'umount2'] from the ERRNO(1) list refused outright" in lines


def test_derivation_is_deterministic_and_its_hash_differs_from_the_base() -> None:
    base = load_profile()
    assert agent_profile(base) == agent_profile(base)
    assert profile_sha256(for_engine(agent_profile(base))) != profile_sha256(for_engine(base))


def _edited(change: Any) -> str:
    profile = json.loads(load_profile())
    change(profile["syscalls"])
    return json.dumps(profile)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda rules: rules.remove(next(r for r in rules if r["names"] == ["clone"]
                                     and r["action"] == "SCMP_ACT_ALLOW")), "ALLOW rules"),
    (lambda rules: rules.remove(next(r for r in rules if r.get("comment") ==
                                     "unshare with CLONE_NEWPID")), "per-flag refusals"),
    (lambda rules: [r["names"].remove("pivot_root") for r in rules
                    if "pivot_root" in r["names"]], "does not refuse ['pivot_root']"),
    (lambda rules: rules.clear(), "ALLOW rules"),
])
def test_a_base_of_another_shape_is_refused_not_guessed(edit: Any, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        agent_profile(_edited(edit))


def test_text_that_is_no_profile_is_refused() -> None:
    for text in ("[]", '{"defaultAction": "SCMP_ACT_ERRNO"}'):
        with pytest.raises(ValueError):
            agent_profile(text)


def test_the_settings_derive_it_from_the_configured_base() -> None:
    from config.settings import Settings

    s = Settings(database_url="postgresql+psycopg://x@127.0.0.1/x")
    assert s.agent_seccomp_json == for_engine(agent_profile(load_profile()))
    assert s.inner_sandbox_profiles == ("agent",)
