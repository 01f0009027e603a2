"""Airlock's seccomp profile: where it lives, its text, what the engine is given, its hash.

The Docker SDK takes the profile's JSON *text* (``security_opt=["seccomp=" + text]``),
not a path as the CLI does. The hash goes into each result's provenance record.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PROFILE_PATH", "for_engine", "load_profile", "profile_sha256"]

DEFAULT_PROFILE_PATH = Path(__file__).with_name("seccomp.json")


def load_profile(path: str | os.PathLike[str] | None = None) -> str:
    """The profile's JSON text, read from ``path`` or from ``config/seccomp.json``."""
    return Path(path if path is not None else DEFAULT_PROFILE_PATH).read_text(encoding="utf-8")


# The system-call ABIs a kernel of this machine can be entered through (what the filter sees
# as ``seccomp_data.arch``): a filter compiled for any other architecture is never consulted.
_X86_ABIS = frozenset({"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"})
_ARM_ABIS = frozenset({"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"})
REACHABLE_ARCHES = {"x86_64": _X86_ABIS, "amd64": _X86_ABIS, "aarch64": _ARM_ABIS, "arm64": _ARM_ABIS}


def for_engine(text: str, machine: str | None = None) -> str:
    """The profile as handed to the engine: the same rules, for this machine's ABIs only, as
    compact JSON without comments.

    runc compiles the filter once per listed architecture in every container it starts, and
    the profile's text travels through dockerd, containerd and runc for each one: on x86_64,
    dropping the aarch64 filter (never consulted there) and the comments cut runc's work in
    the container by about 2 ms. Decisions are unchanged: the kernel evaluates only the
    section of the caller's ABI, and every ABI this machine's kernel has (i386 and x32 on
    x86_64) stays as listed. Text that is not a JSON object, an unknown machine, or a list
    with nothing this machine runs is returned as given (the engine or preflight judges it).
    """
    try:
        profile = json.loads(text)
    except ValueError:
        return text
    if not isinstance(profile, dict):
        return text
    reachable = REACHABLE_ARCHES.get((machine or platform.machine()).lower())
    arches = profile.get("architectures")
    if reachable is not None and isinstance(arches, list):
        kept = [a for a in arches if a in reachable]
        if kept:
            profile["architectures"] = kept
    return json.dumps(_without_comments(profile), separators=(",", ":"))


def _without_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_comments(v) for k, v in value.items() if k != "comment"}
    if isinstance(value, list):
        return [_without_comments(v) for v in value]
    return value


def profile_sha256(text: str) -> str:
    """Hex SHA-256 of the profile text exactly as it is handed to the engine."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
