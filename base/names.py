"""File names as printable text and back, reversibly: a job's file may be named with any bytes
(a newline, an escape sequence, bytes that are not UTF-8), and its name must still be stored
as text, shown on a terminal and handed to an HTTP client.

``to_text``: UTF-8 as it is, except a backslash (``\\\\``), a byte that is not UTF-8
(``\\xNN``), an ASCII control character (``\\xNN``) and any other character Python does not
call printable (``\\uNNNN`` or ``\\UNNNNNNNN``: bidi controls, zero-width characters, line
separators). ``\\xNN`` always stands for one byte, ``\\u`` for a character; ``from_text``
undoes it.
"""

from __future__ import annotations

import re

ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _shown(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if ch.isprintable():
        return ch
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def to_text(raw: bytes) -> str:
    return "".join(_shown(ch) for ch in raw.decode("utf-8", "surrogateescape"))


def from_text(text: str) -> bytes:
    """The bytes ``to_text`` was given. Raises ValueError for text it cannot have made."""
    out = bytearray()
    at = 0
    for m in ESCAPE.finditer(text):
        out += text[at:m.start()].encode("utf-8")
        code = m.group(1)
        if code == "\\":
            out += b"\\"
        elif code[0] == "x":
            out.append(int(code[1:], 16))
        else:
            out += chr(int(code[1:], 16)).encode("utf-8")
        at = m.end()
    out += text[at:].encode("utf-8")
    if to_text(bytes(out)) != text:
        raise ValueError("not a name as to_text writes it")
    return bytes(out)
