"""Checks of the engine a worker runs its jobs on, shared by the worker's preflight and
``airlock doctor``: its versions, and its runc against known container escapes (pure: runc
versions, fixes, changelog scanning; thin I/O around them)."""

from __future__ import annotations

import enum
import gzip
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

DEBIAN_CHANGELOG = Path("/usr/share/doc/runc/changelog.Debian.gz")


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": str(self.status), "detail": self.detail}


# --- runc versions (pure) -----------------------------------------------------------------

FINAL = 10**9  # sorts a release after all of its release candidates


class RuncVersion(NamedTuple):
    major: int
    minor: int
    patch: int
    rc: int = FINAL

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return base if self.rc == FINAL else f"{base}-rc{self.rc}"


@dataclass(frozen=True, slots=True)
class KnownCve:
    cve: str
    fixed_in: tuple[RuncVersion, ...]  # the first fixed release of each maintained line
    summary: str
    # "job": a process inside a container can use it; "image": it takes a crafted image or
    # container configuration at creation, which Airlock's jobs never choose (the operator's
    # allowlisted images, Airlock's own create arguments, nothing exec'd into a container).
    reach: str = "job"

    def affects(self, version: RuncVersion) -> bool:
        """Older than every fix, or on a line whose fix came later than this version."""
        for fixed in sorted(self.fixed_in):
            if version < fixed:
                return True
            if (version.major, version.minor) == (fixed.major, fixed.minor):
                return False
        return False


KNOWN_RUNC_CVES = (
    KnownCve("CVE-2019-5736", (RuncVersion(1, 0, 0, 7),),
             "a container process can overwrite the host's runc binary"),
    KnownCve("CVE-2024-21626", (RuncVersion(1, 1, 12),),
             "leaked fd: a container's working directory in the host filesystem"),
    # The runc advisories of 5 November 2025: races on the mounts runc makes while it creates a
    # container, steered by the image's own files (symlinks at /dev/null, /dev/console, /proc).
    KnownCve("CVE-2025-31133", (RuncVersion(1, 2, 8), RuncVersion(1, 3, 3), RuncVersion(1, 4, 0, 3)),
             "masked paths redirected by a crafted image: host files writable", reach="image"),
    KnownCve("CVE-2025-52565", (RuncVersion(1, 2, 8), RuncVersion(1, 3, 3), RuncVersion(1, 4, 0, 3)),
             "/dev/console bind-mount redirected by a crafted image", reach="image"),
    KnownCve("CVE-2025-52881", (RuncVersion(1, 2, 8), RuncVersion(1, 3, 3), RuncVersion(1, 4, 0, 3)),
             "procfs writes redirected during creation: LSM labels and sysctls bypassed",
             reach="image"),
)
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-~.]?rc\.?(\d+))?")


def parse_runc_version(text: str) -> RuncVersion | None:
    """``1.1.5+ds1``, ``1.0.0-rc92``, ``1.0-rc7``, ``1.0.0~rc93+ds1``, ``v1.1.12``, …"""
    found = _VERSION.search(text)
    if found is None:
        return None
    major, minor, patch, rc = found.groups()
    return RuncVersion(int(major), int(minor), int(patch or 0), int(rc) if rc else FINAL)


def open_cves(version: RuncVersion) -> list[KnownCve]:
    """The known escapes this version predates the fix of."""
    return [known for known in KNOWN_RUNC_CVES if known.affects(version)]


def cves_in_changelog(text: str) -> set[str]:
    return set(re.findall(r"CVE-\d{4}-\d{4,}", text))


def judge_runc(version_text: str, backported: Iterable[str] = (),
               accepted: Iterable[str] = (), package: str = "") -> Check:
    """Fail on a known container escape nobody patched or accepted; warn on a patched or
    accepted one (the version number alone cannot show a distribution's backport)."""
    version = parse_runc_version(version_text)
    if version is None:
        return Check("runc", Status.WARN, f"cannot read the runc version from {version_text!r}")
    backported, accepted = set(backported), set(accepted)
    notes, unresolved = [], []
    for known in open_cves(version):
        fixes = "/".join(str(v) for v in known.fixed_in)
        where = f"{known.cve} (fixed in {fixes}: {known.summary})"
        if known.cve in backported:
            notes.append(f"{where}: patched by the distribution's package {package}".rstrip())
        elif known.cve in accepted:
            notes.append(f"{where}: accepted by the operator")
        elif known.reach == "image":
            notes.append(f"{where}: needs a crafted image or configuration, which jobs do not"
                         " choose; upgrade runc all the same")
        else:
            unresolved.append(where)
    if unresolved:
        hint = "upgrade runc, or accept with --allow-known-cve after reading docs/operations.md"
        also = f"; it also predates {'; '.join(notes)}" if notes else ""
        return Check("runc", Status.FAIL,
                     f"runc {version_text} is vulnerable to {'; '.join(unresolved)}; {hint}{also}")
    if notes:
        return Check("runc", Status.WARN, f"runc {version_text} predates {'; '.join(notes)}")
    fixed = ", ".join(known.cve for known in KNOWN_RUNC_CVES)
    return Check("runc", Status.OK, f"runc {version_text} (has the fixes for {fixed})")


# --- checks (I/O) -------------------------------------------------------------------------

def _runc_component(version: dict[str, Any]) -> tuple[str, str]:
    for component in version.get("Components") or []:
        if component.get("Name") == "runc":
            return str(component.get("Version", "")), str(
                (component.get("Details") or {}).get("GitCommit", ""))
    return "", ""


def distro_backports(package_version: str, changelog: Path = DEBIAN_CHANGELOG) -> set[str]:
    """CVEs the host's Debian runc package says it fixed, when the engine runs that package."""
    if not package_version:
        return set()
    try:
        installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "runc"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
        text = gzip.decompress(changelog.read_bytes()).decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return set()
    return cves_in_changelog(text) if installed == package_version else set()


def check_engine(api: Any) -> Check:
    v = api.version()
    return Check("docker engine", Status.OK,
                 f"Docker {v.get('Version')} (API {v.get('ApiVersion')}), {v.get('Os')}/"
                 f"{v.get('Arch')}, kernel {v.get('KernelVersion')}")


def check_runc(api: Any, accepted: Iterable[str]) -> Check:
    version, package = _runc_component(api.version())
    if not version:
        return Check("runc", Status.WARN, "the engine does not report its runc version")
    return judge_runc(version, distro_backports(package), accepted, package)
