"""Airlock's seccomp profile: where it lives, its text, and its hash.

The Docker SDK takes the profile's JSON *text* (``security_opt=["seccomp=" + text]``),
not a path as the CLI does. The hash goes into each result's provenance record.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["DEFAULT_PROFILE_PATH", "load_profile", "profile_sha256"]

DEFAULT_PROFILE_PATH = Path(__file__).with_name("seccomp.json")


def load_profile(path: str | os.PathLike[str] | None = None) -> str:
    """The profile's JSON text, read from ``path`` or from ``config/seccomp.json``."""
    return Path(path if path is not None else DEFAULT_PROFILE_PATH).read_text(encoding="utf-8")


def profile_sha256(text: str) -> str:
    """Hex SHA-256 of the profile text exactly as it is handed to the engine."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
