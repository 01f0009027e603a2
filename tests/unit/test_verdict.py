from __future__ import annotations

import pytest

from workers.verdict import Evidence, Verdict, classify


@pytest.mark.parametrize(("evidence", "verdict"), [
    (Evidence(exit_code=0), Verdict.OK),
    (Evidence(exit_code=3), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=139, signal=11, ended="signal"), Verdict.SIGNALED),
    (Evidence(exit_code=137, oom_killed=True), Verdict.OOM),
    (Evidence(exit_code=137, timed_out=True), Verdict.TIMEOUT),
    (Evidence(exit_code=137, timed_out=True, oom_killed=True), Verdict.TIMEOUT),
    (Evidence(exit_code=137, output_exceeded=True, bytes_dropped=9), Verdict.OUTPUT_LIMIT),
    (Evidence(exit_code=137, cancelled=True, timed_out=True), Verdict.CANCELLED),
    (Evidence(exit_code=None), Verdict.ERROR),
    (Evidence(exit_code=1, pids_max_events=5), Verdict.PIDS_LIMIT),
    (Evidence(exit_code=0, pids_max_events=5), Verdict.OK),
    (Evidence(exit_code=1, disk_full=True), Verdict.DISK_LIMIT),
    (Evidence(exit_code=255), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=137, signal=9, ended="signal", oom_events=1), Verdict.OOM),
    (Evidence(exit_code=137, oom_events=1), Verdict.OOM),  # PID 1 itself OOM-killed: no status
    # Forged: the job exited with these statuses by itself (the launcher saw an exit).
    (Evidence(exit_code=137, ended="exit"), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=137, ended="exit", memory_at_limit=True), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=139, ended="exit"), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=159, ended="exit"), Verdict.NONZERO_EXIT),
    # A real SIGKILL (kill -9) with no OOM count is a signal, wherever memory stood.
    (Evidence(exit_code=137, signal=9, ended="signal"), Verdict.SIGNALED),
    (Evidence(exit_code=137, signal=9, ended="signal", memory_at_limit=True), Verdict.SIGNALED),
    (Evidence(exit_code=159, signal=31, ended="signal"), Verdict.SIGNALED),
    (Evidence(exit_code=1, memory_at_limit=True), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=137, memory_at_limit=True, timed_out=True), Verdict.TIMEOUT),
    # the parent cgroup's pids.peak at the cap: the leaf's pids.events is gone at exit
    (Evidence(exit_code=1, pids_peak=64, pids_limit=64), Verdict.PIDS_LIMIT),
    (Evidence(exit_code=1, pids_peak=63, pids_limit=64), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=1, pids_peak=None, pids_limit=64), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=137, timed_out=True, pids_peak=64, pids_limit=64), Verdict.TIMEOUT),
])
def test_verdict_table(evidence: Evidence, verdict: Verdict) -> None:
    assert classify(evidence) == verdict


def test_a_signal_is_the_launchers_word_never_read_from_an_exit_status() -> None:
    assert Evidence(exit_code=137).signal is None
    assert Evidence(exit_code=137, ended="exit").as_dict()["signal"] is None
    assert Evidence(exit_code=None).as_dict()["signal"] is None


def test_flags_record_a_cap_or_seccomp_kill_that_did_not_decide_the_verdict() -> None:
    capped = Evidence(exit_code=137, timed_out=True, pids_peak=256, pids_limit=256).as_dict()
    assert capped["pids_capped"] is True and capped["pids_peak"] == 256
    assert Evidence(exit_code=0, pids_max_events=3).as_dict()["pids_capped"] is True
    assert Evidence(exit_code=0, pids_peak=7, pids_limit=256).as_dict()["pids_capped"] is False
    assert Evidence(exit_code=159, signal=31, ended="signal").as_dict()["seccomp_killed"] is True
    assert Evidence(exit_code=159, ended="exit").as_dict()["seccomp_killed"] is False
    assert Evidence(exit_code=137).as_dict()["seccomp_killed"] is False
