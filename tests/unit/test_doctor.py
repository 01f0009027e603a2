"""The pure parts of ``airlock doctor``: runc versions against known container escapes."""

from __future__ import annotations

import pytest

from airlock.doctor import failed
from tasks.host_checks import (
    FINAL,
    Check,
    RuncVersion,
    Status,
    cves_in_changelog,
    judge_runc,
    open_cves,
    parse_runc_version,
)


@pytest.mark.parametrize(("text", "version"), [
    ("1.1.5+ds1", RuncVersion(1, 1, 5)),
    ("runc version 1.1.12\ncommit: v1.1.12-0-g51d5e94", RuncVersion(1, 1, 12)),
    ("v1.1.12", RuncVersion(1, 1, 12)),
    ("1.0.0-rc92", RuncVersion(1, 0, 0, 92)),
    ("1.0-rc7", RuncVersion(1, 0, 0, 7)),
    ("1.0.0~rc93+ds1", RuncVersion(1, 0, 0, 93)),  # Debian spells a pre-release with ~
    ("1.2.0-rc.1", RuncVersion(1, 2, 0, 1)),
    ("1.1.12-0ubuntu2~22.04.1", RuncVersion(1, 1, 12)),  # a distribution suffix, not an rc
    ("1.7.20", RuncVersion(1, 7, 20)),
])
def test_runc_versions_are_read_from_what_engines_and_distributions_print(
        text: str, version: RuncVersion) -> None:
    assert parse_runc_version(text) == version


def test_a_release_candidate_sorts_before_its_release() -> None:
    assert RuncVersion(1, 0, 0, 6) < RuncVersion(1, 0, 0, 7) < RuncVersion(1, 0, 0, 92)
    assert RuncVersion(1, 0, 0, 92) < RuncVersion(1, 0, 0) < RuncVersion(1, 0, 1)
    assert RuncVersion(1, 1, 11) < RuncVersion(1, 1, 12) < RuncVersion(1, 2, 0, 1)
    assert str(RuncVersion(1, 0, 0, 7)) == "1.0.0-rc7" and RuncVersion(1, 1, 5).rc == FINAL


NOV_2025 = ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]


@pytest.mark.parametrize(("version", "cves"), [
    ("1.0.0-rc6", ["CVE-2019-5736", "CVE-2024-21626", *NOV_2025]),
    ("1.0-rc7", ["CVE-2024-21626", *NOV_2025]),  # the first fixed release of CVE-2019-5736
    ("1.1.5", ["CVE-2024-21626", *NOV_2025]),  # this host's engine
    ("1.1.11", ["CVE-2024-21626", *NOV_2025]),
    ("1.1.12", NOV_2025),
    ("1.2.0", NOV_2025),
    ("1.2.7", NOV_2025),
    ("1.2.8", []),  # each maintained line got its own fix
    ("1.3.2", NOV_2025),
    ("1.3.3", []),
    ("1.4.0-rc2", NOV_2025),
    ("1.4.0-rc3", []),
    ("1.4.1", []),
])
def test_known_escapes_by_version(version: str, cves: list[str]) -> None:
    parsed = parse_runc_version(version)
    assert parsed is not None
    assert [known.cve for known in open_cves(parsed)] == cves


def test_a_vulnerable_runc_fails_and_says_how_to_resolve_it() -> None:
    check = judge_runc("1.1.5+ds1")
    assert check.status is Status.FAIL
    assert "CVE-2024-21626" in check.detail and "1.1.12" in check.detail
    assert "--allow-known-cve" in check.detail
    assert judge_runc("1.0.0-rc6").detail.count("CVE-") == 2 + len(NOV_2025)


def test_an_escape_that_takes_a_crafted_image_warns_rather_than_fails() -> None:
    check = judge_runc("1.2.3")
    assert check.status is Status.WARN
    assert all(cve in check.detail for cve in NOV_2025) and "1.2.8/1.3.3" in check.detail
    assert "crafted image" in check.detail and "upgrade runc" in check.detail


def test_a_distribution_backport_or_an_operators_acceptance_turns_it_into_a_warning() -> None:
    patched = judge_runc("1.1.5+ds1", backported={"CVE-2024-21626"})
    assert patched.status is Status.WARN and "distribution" in patched.detail
    accepted = judge_runc("1.1.5+ds1", accepted={"CVE-2024-21626"})
    assert accepted.status is Status.WARN and "accepted" in accepted.detail
    # Accepting one escape does not accept another.
    assert judge_runc("1.0.0-rc6", accepted={"CVE-2024-21626"}).status is Status.FAIL


def test_a_fixed_or_unreadable_runc() -> None:
    assert judge_runc("1.2.8").status is Status.OK
    assert judge_runc("1.3.3").status is Status.OK
    unknown = judge_runc("unknown")
    assert unknown.status is Status.WARN and "cannot read" in unknown.detail


def test_cves_named_in_a_debian_changelog() -> None:
    text = """runc (1.1.5+ds1-1+deb12u1) bookworm-security; urgency=high
  * CVE-2024-21626: several container breakouts due to internally leaked fds
runc (1.1.5+ds1-1) unstable; urgency=medium
    + CVE-2023-27561: Incorrect Authorization vulnerability (re-introduced CVE-2019-19921)
"""
    assert cves_in_changelog(text) == {"CVE-2024-21626", "CVE-2023-27561", "CVE-2019-19921"}
    assert cves_in_changelog("no fixes here") == set()


def test_the_exit_status_follows_failures_only() -> None:
    ok, warn, fail = (Check("x", status, "") for status in Status)
    assert not failed([ok, warn]) and failed([ok, fail]) and not failed([])
