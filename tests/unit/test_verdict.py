from __future__ import annotations

import pytest

from workers.verdict import Evidence, Verdict, classify


@pytest.mark.parametrize(("evidence", "verdict"), [
    (Evidence(exit_code=0), Verdict.OK),
    (Evidence(exit_code=3), Verdict.NONZERO_EXIT),
    (Evidence(exit_code=139), Verdict.SIGNALED),
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
])
def test_verdict_table(evidence: Evidence, verdict: Verdict) -> None:
    assert classify(evidence) == verdict


def test_signal_is_read_from_the_shell_convention() -> None:
    assert Evidence(exit_code=137).signal == 9
    assert Evidence(exit_code=3).signal is None
    assert Evidence(exit_code=None).as_dict()["signal"] is None
