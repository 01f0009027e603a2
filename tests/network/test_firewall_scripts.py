"""scripts/firewall/{apply,verify,remove}.sh against the real iptables (root needed).

The rules are left as they were found: removed at the end unless they were in place before.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.network, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
FIREWALL = ROOT / "scripts" / "firewall"
SCRIPTS = [*sorted(FIREWALL.glob("*.sh")), ROOT / "scripts" / "standins.sh",
           ROOT / "images" / "proxy" / "entrypoint.sh"]


COUNTERS = re.compile(r"\[\d+:\d+\]")


def run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FIREWALL / script)], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
    )


def our_rules() -> str:
    """Our chains, rules and jumps in iptables-save form, counters stripped."""
    lines = []
    for tool in ("iptables-save", "ip6tables-save"):
        saved = subprocess.run([tool, "-t", "filter"], capture_output=True, text=True, check=True)
        lines += [f"{tool}: {COUNTERS.sub('', line)}"
                  for line in saved.stdout.splitlines() if "AIRLOCK" in line]
    return "\n".join(lines)


def first_rule(tool: str, chain: str) -> str:
    listing = subprocess.run([tool, "-S", chain], capture_output=True, text=True, check=True)
    return listing.stdout.splitlines()[1]


@pytest.fixture(autouse=True)
def restore_state() -> Iterator[None]:
    was_applied = run("verify.sh").returncode == 0
    yield
    assert run("apply.sh" if was_applied else "remove.sh").returncode == 0


def test_apply_twice_gives_identical_rules_and_verify_passes() -> None:
    # Given the rules applied once
    assert run("apply.sh").returncode == 0
    first = our_rules()
    # When applied again
    assert run("apply.sh").returncode == 0
    # Then nothing changed, the jumps come first in their hooks, and verify passes
    assert our_rules() == first
    assert all(c in first for c in ("AIRLOCK-EGRESS", "AIRLOCK-INPUT", "AIRLOCK-REJECT"))
    assert first_rule("iptables", "DOCKER-USER") == "-A DOCKER-USER -j AIRLOCK-EGRESS"
    assert first_rule("iptables", "INPUT") == "-A INPUT -j AIRLOCK-INPUT"
    assert first_rule("ip6tables", "FORWARD") == "-A FORWARD -j AIRLOCK-EGRESS"
    verified = run("verify.sh")
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(
    ("delete", "named"),
    [
        (["iptables", "-D", "AIRLOCK-EGRESS", "-s", "172.29.0.0/24", "-d", "169.254.0.0/16",
          "-m", "comment", "--comment", "airlock:ws-to-169.254.0.0_16",
          "-j", "AIRLOCK-REJECT"],
         "airlock:ws-to-169.254.0.0_16"),
        (["iptables", "-D", "AIRLOCK-INPUT", "-i", "airlock-ws0",
          "-m", "comment", "--comment", "airlock:ws-bridge-to-host",
          "-j", "AIRLOCK-REJECT"],
         "airlock:ws-bridge-to-host"),
        (["ip6tables", "-D", "AIRLOCK-EGRESS", "-i", "airlock-ws0", "-d", "fd00:ec2::254/128",
          "-m", "comment", "--comment", "airlock:ws-to-fd00_ec2__254_128",
          "-j", "AIRLOCK-REJECT"],
         "airlock:ws-to-fd00_ec2__254_128"),
        (["iptables", "-D", "DOCKER-USER", "-j", "AIRLOCK-EGRESS"], "AIRLOCK-EGRESS"),
    ],
    ids=["metadata-v4", "input-bridge", "metadata-v6", "hook-jump"],
)
def test_verify_names_a_deleted_rule(delete: list[str], named: str) -> None:
    # Given the rules applied, when one rule is deleted by hand
    assert run("apply.sh").returncode == 0
    subprocess.run(delete, check=True)
    # Then verify fails and names it
    verified = run("verify.sh")
    assert verified.returncode == 1
    assert named in verified.stderr, verified.stderr
    # And apply repairs it
    assert run("apply.sh").returncode == 0
    assert run("verify.sh").returncode == 0


def test_verify_notices_other_settings() -> None:
    assert run("apply.sh").returncode == 0
    verified = run("verify.sh", AIRLOCK_PROXY_PORT="3129")
    assert verified.returncode == 1
    assert "airlock:ws-to-proxy" in verified.stderr


def test_remove_cleans_up_and_reapply_restores() -> None:
    assert run("apply.sh").returncode == 0
    # When removed (twice: idempotent)
    assert run("remove.sh").returncode == 0
    assert run("remove.sh").returncode == 0
    # Then nothing of ours is left and verify fails, naming the missing chains
    assert our_rules() == ""
    verified = run("verify.sh")
    assert verified.returncode == 1
    assert "chain AIRLOCK-EGRESS is missing" in verified.stderr
    # And re-applying restores exactly the same rules
    assert run("apply.sh").returncode == 0
    assert run("verify.sh").returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_shellcheck_clean(script: Path) -> None:
    checked = subprocess.run(
        ["shellcheck", "-x", str(script)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
