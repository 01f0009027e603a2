"""What a person's terminal is shown of a job (ATTACKS.md A37). Pure: strings in, strings out.

Job output is made visible: newline, tab and printable text in any script pass; every other
control (C0, DEL, C1), ESC (so the sequence it starts shows as text), bytes that are not UTF-8,
and the invisible format characters (bidi overrides and isolates, zero-width characters, the
BOM: Unicode's Cf, Zl and Zp) are written as escapes: ``\\x1b``, ``\\r``, ``\\xff``, ``\\u202e``.
A job can then set no attribute, move no cursor, clear nothing, title no window and write no
clipboard. Airlock's own lines start on a fresh line with attributes reset and a bold
reverse-video ``airlock:``, which job text can no longer produce.
"""

from __future__ import annotations

import codecs
import re

RESET = "\x1b[0m"
MARK = "\x1b[1;7m"  # bold, reverse video: Airlock's own lines

# Unicode's format characters (Cf, as of Unicode 15), the line and paragraph separators
# (Zl, Zp) and the surrogates, which only a broken string holds; but the zero-width non-joiner
# and joiner (U+200C, U+200D), which Persian, Indic scripts and emoji sequences need to render
# and which can neither move, hide nor reorder text.
_INVISIBLE = (r"\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b"
              r"\u200e\u200f"
              r"\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb"
              r"\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
              r"\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f")
_UNSAFE = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")
_NOT_ASCII = re.compile(r"[^\t\n\x20-\x7e]")  # for a terminal that does not read UTF-8


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x0D:
        return "\\r"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, ascii_only: bool = False) -> str:
    """``text`` with every character a terminal would act on, or not show, written as an escape."""
    return (_NOT_ASCII if ascii_only else _UNSAFE).sub(_escape, text)


def one_line(text: str, ascii_only: bool = False) -> str:
    """``text`` made visible, its newlines too: one of Airlock's lines stays one line."""
    return visible(text, ascii_only).replace("\n", "\\n")


class Shown:
    """One output stream made visible, chunk by chunk: a UTF-8 sequence split across chunks
    still decodes; a byte that is not UTF-8 shows as ``\\xNN``."""

    def __init__(self, ascii_only: bool = False) -> None:
        self.ascii_only = ascii_only
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")

    def feed(self, data: bytes) -> str:
        return visible(self._decoder.decode(data), self.ascii_only)

    def finish(self) -> str:
        """What is held back (the start of a sequence that never completed), as escapes."""
        return visible(self._decoder.decode(b"", final=True), self.ascii_only)


class Screen:
    """One terminal shown both of a job's streams and Airlock's lines. It remembers whether
    the last thing shown ended a line, so that Airlock's next line starts a fresh one."""

    def __init__(self, ascii_only: bool = False) -> None:
        self.ascii_only = ascii_only
        self.streams = {"stdout": Shown(ascii_only), "stderr": Shown(ascii_only)}
        self.mid_line = False

    def show(self, kind: str, data: bytes) -> str:
        """A chunk of the job's ``kind`` stream (stdout, stderr), made visible."""
        return self._noted(self.streams[kind].feed(data))

    def finish(self, kind: str) -> str:
        return self._noted(self.streams[kind].finish())

    def passed(self, data: bytes) -> None:
        """Job bytes that went to the terminal as they are (--raw)."""
        if data:
            self.mid_line = not data.endswith(b"\n")

    def _noted(self, text: str) -> str:
        if text:
            self.mid_line = not text.endswith("\n")
        return text

    def own_line(self, text: str, *, interrupted: bool = False) -> str:
        """Airlock's line ``text`` ("airlock: ..."): reset, on a fresh line, its first word
        marked. ``interrupted``: the terminal echoed ^C, so the line is not fresh."""
        start = "\n" if self.mid_line or interrupted else ""
        self.mid_line = False
        head, space, rest = one_line(text, self.ascii_only).partition(" ")
        return f"{RESET}{start}{MARK}{head}{RESET}{space}{rest}\n"
