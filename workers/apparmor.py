"""AppArmor for job containers (config/apparmor/airlock-job): whether this host can apply the
profile, and what the worker then does. Knows the kernel's files, nothing of Docker's API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENABLED = Path("/sys/module/apparmor/parameters/enabled")
PROFILES = Path("/sys/kernel/security/apparmor/profiles")
PROFILE_SOURCE = Path(__file__).resolve().parents[1] / "config" / "apparmor" / "airlock-job"


@dataclass(frozen=True, slots=True)
class Kernel:
    """What the kernel says: AppArmor on, and the profiles loaded (name → mode)."""

    enabled: bool
    loaded: dict[str, str]


def read_kernel(enabled: Path = ENABLED, profiles: Path = PROFILES) -> Kernel:
    try:
        on = enabled.read_text().strip().upper().startswith("Y")
    except OSError:
        on = False
    loaded: dict[str, str] = {}
    try:
        lines = profiles.read_text().splitlines() if on else []
    except OSError:
        lines = []
    for line in lines:  # "airlock-job (enforce)"
        name, _, mode = line.strip().rpartition(" ")
        if name:
            loaded[name] = mode.strip("()")
    return Kernel(on, loaded)


def decide(mode: str, profile: str, kernel: Kernel) -> tuple[str, str | None]:
    """Pure: (the profile to apply, or ""; why it is not applied, or None) for a setting
    ``mode``: off, auto (where it can be), require (the worker refuses a host that cannot)."""
    if mode == "off":
        return "", "AIRLOCK_APPARMOR=off"
    if not kernel.enabled:
        return "", f"the kernel has no AppArmor ({ENABLED} is not Y)"
    state = kernel.loaded.get(profile)
    if state is None:
        return "", (f"profile {profile} is not loaded: scripts/setup-host.sh loads it"
                    " (apparmor_parser -r -W config/apparmor/airlock-job)")
    if state != "enforce":
        return "", f"profile {profile} is loaded in {state} mode, not enforce"
    return profile, None
