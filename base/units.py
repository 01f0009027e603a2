"""Human sizes for the command line: 512m, 4g, 1.5GiB, 65536."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 512m, 4g or a number of bytes)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])
