"""The preflight's pure judgements: is a canary contained, given what the runner saw?"""

from __future__ import annotations

import json
from typing import Any

import pytest

from config.settings import Settings
from tasks import preflight
from tasks.contract import resolve
from tasks.preflight import CanaryResult, PreflightResult, Seen
from workers.verdict import Verdict

MiB = 1024**2
EPERM = 1


def syscalls(refused: dict[str, int] | None = None, **status: str) -> str:
    got: dict[str, Any] = {
        "refused": refused or {"unshare_newuser": 1, "mount": 1, "io_uring_setup": 1},
        "seccomp": "2", "no_new_privs": "1", "cap_eff": "0000000000000000",
    }
    return json.dumps(got | status)


def test_denied_syscalls_contained_only_when_every_call_gets_eperm() -> None:
    assert preflight.judge_syscalls(Seen(Verdict.OK, syscalls(), {})) is None
    # an allow-all profile: the call ran (0) or reached the kernel (EFAULT 14)
    why = preflight.judge_syscalls(Seen(Verdict.OK, syscalls({"unshare_newuser": 0,
                                                              "io_uring_setup": 14}), {}))
    assert why is not None and "unshare_newuser" in why and "io_uring_setup" in why
    # Under an inner-sandbox default profile, the agent seccomp profile admits user namespaces.
    admitted = preflight.judge_syscalls(Seen(Verdict.OK, syscalls({"unshare_newuser": 0,
                                                                   "mount": 1}), {}),
                                        preflight.INNER_ADMITS)
    assert admitted is None


@pytest.mark.parametrize(("status", "needle"), [
    ({"seccomp": "0"}, "Seccomp 0"),
    ({"no_new_privs": "0"}, "NoNewPrivs 0"),
    ({"cap_eff": "00000000000000c1"}, "CapEff"),
])
def test_denied_syscalls_also_need_seccomp_no_new_privs_and_no_capabilities(
        status: dict[str, str], needle: str) -> None:
    why = preflight.judge_syscalls(Seen(Verdict.OK, syscalls(**status), {}))
    assert why is not None and needle in why


def test_a_canary_that_did_not_report_is_not_contained() -> None:
    assert preflight.judge_syscalls(Seen(Verdict.TIMEOUT, "", {})) is not None
    assert preflight.judge_read_only(Seen(Verdict.OK, "garbage", {})) is not None
    assert preflight.judge_fork(Seen(Verdict.OK, "", {}), 32) is not None
    assert preflight.judge_disk(Seen(Verdict.OK, "", {}), MiB, "btrfs") is not None


def test_memory_bomb_must_be_oom_at_its_limit() -> None:
    limit = 64 * MiB
    assert preflight.judge_memory(Seen(Verdict.OOM, "", {}, limit), limit) is None
    assert preflight.judge_memory(Seen(Verdict.OK, "not contained\n", {}), limit) is not None
    assert preflight.judge_memory(Seen(Verdict.OOM, "", {}, 2 * limit), limit) is not None


def test_fork_bomb_must_hit_the_cap_and_have_it_recorded() -> None:
    capped = {"pids_capped": True}
    assert preflight.judge_fork(Seen(Verdict.PIDS_LIMIT, "29 11", capped), 32) is None
    assert preflight.judge_fork(Seen(Verdict.OK, "4096 0", {}), 32) is not None  # no cap
    why = preflight.judge_fork(Seen(Verdict.NONZERO_EXIT, "29 11", {"pids_capped": False}), 32)
    assert why is not None and "not recorded" in why


def test_read_only_root_needs_erofs_everywhere() -> None:
    good = json.dumps({"/x": 30, "/etc/x": 30})
    assert preflight.judge_read_only(Seen(Verdict.OK, good, {})) is None
    why = preflight.judge_read_only(Seen(Verdict.OK, json.dumps({"/x": 30, "/etc/x": 0}), {}))
    assert why is not None and "/etc/x" in why


def test_disk_fill_must_stop_at_the_bound_and_be_recorded_on_btrfs() -> None:
    bound = 16 * MiB
    assert preflight.judge_disk(Seen(Verdict.DISK_LIMIT, f"{bound - MiB} 122", {}), bound,
                                "btrfs") is None
    assert preflight.judge_disk(Seen(Verdict.NONZERO_EXIT, f"{bound} 28", {}), bound,
                                "tmpfs") is None  # ENOSPC on a sized tmpfs: no usage counter
    assert preflight.judge_disk(Seen(Verdict.OK, f"{4 * bound} 0", {}), bound, "btrfs") is not None
    why = preflight.judge_disk(Seen(Verdict.NONZERO_EXIT, f"{bound} 122", {}), bound, "btrfs")
    assert why is not None and "not recorded" in why


def test_runtime_findings_refuse_only_under_the_refuse_policy() -> None:
    assert preflight.judge_runtime("fail", "runc 1.1.5 is vulnerable", "warn").startswith("warn:")
    assert preflight.judge_runtime("fail", "runc 1.1.5 is vulnerable", "refuse").startswith("refuse:")
    assert preflight.judge_runtime("warn", "backported", "refuse") == "warn: backported"
    assert preflight.judge_runtime("ok", "runc 1.2.8", "refuse") == "ok: runc 1.2.8"


def result(*contained: bool, runtime: dict[str, str] | None = None) -> PreflightResult:
    canaries = tuple(CanaryResult(f"c{i}", ok, "contained" if ok else "escaped", "ok", 0.5)
                     for i, ok in enumerate(contained))
    runtime = runtime or {}
    ok = all(contained) and not any(v.startswith("refuse") for v in runtime.values())
    return PreflightResult(ok, canaries, runtime, 1.5)


def test_result_lists_failures_and_summarises() -> None:
    bad = result(True, False, runtime={"runc": "refuse: CVE-x"})
    assert bad.failures == ["c1: escaped", "runc: refuse: CVE-x"]
    assert bad.summary().startswith("preflight FAILED in 1.5s: c0 ok 0.5s, c1 NOT CONTAINED")
    assert result(True, True).summary().startswith("preflight ok")
    assert result(True).as_dict()["canaries"][0]["name"] == "c0"


def test_every_canary_is_a_valid_job_within_the_fleet_bounds() -> None:
    s = Settings()
    names = [c.name for c in preflight.canaries(s)]
    assert names[:5] == ["denied_syscalls", "memory_bomb", "fork_bomb", "read_only_root",
                         "disk_fill"]
    for canary in preflight.canaries(s):
        resolve(canary.spec, s)  # raises JobSpecError if a canary asked for too much



def test_a_missing_launcher_refuses_the_start_before_any_canary(tmp_path: Any) -> None:
    # Returns before connecting anywhere: no engine, database or Redis is needed for this.
    s = Settings(launcher_path=str(tmp_path / "airlock-init"), database_url="postgresql://x@nowhere/x")
    result = preflight.run(s)
    assert not result.ok and result.canaries == ()
    [failure] = result.failures
    assert failure.startswith("launcher: refuse: launcher ") and "build-launcher.sh" in failure
    assert preflight.last_result() is result
