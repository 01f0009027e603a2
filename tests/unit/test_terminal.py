"""What a terminal is shown of a job (airlock/terminal.py): tables."""

from __future__ import annotations

import random
import re
import sys
import unicodedata

import pytest

from airlock.terminal import MARK, RESET, Screen, Shown, one_line, visible

# What a terminal acts on: every C0 control but newline and tab, DEL, and C1.
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.mark.parametrize(("job_text", "shown"), [
    ("\x1b[8mhidden\x1b[0m", r"\x1b[8mhidden\x1b[0m"),  # conceal
    ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),  # window title, ended by BEL
    ("\x1b]2;pwned\x1b\\", "\\x1b]2;pwned\\x1b\\"),  # window title, ended by ST
    ("\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07", r"\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"),  # clipboard
    ("\x1b[1A\x1b[2K\x1b[10;5H\x1b7\x1b8", r"\x1b[1A\x1b[2K\x1b[10;5H\x1b7\x1b8"),  # cursor
    ("\x1b[2J\x1b[3J\x1bc", r"\x1b[2J\x1b[3J\x1bc"),  # clear the screen, the scrollback; reset
    ("\x1b[?1049h\x1b[?25l", r"\x1b[?1049h\x1b[?25l"),  # alternate screen, cursor hidden
    ("\x1bP+q544e\x1b\\", "\\x1bP+q544e\\x1b\\"),  # DCS
    ("fake\rreal", r"fake\rreal"),  # carriage return
    ("abc\x08\x08\x08xyz", r"abc\x08\x08\x08xyz"),  # backspace
    ("\x00\x07\x0b\x0c\x7f", r"\x00\x07\x0b\x0c\x7f"),  # NUL, BEL, VT, FF, DEL
    ("\x9b8m\x9d0;t\x9c", r"\x9b8m\x9d0;t\x9c"),  # C1 CSI, OSC and ST as characters
    ("user\u202eexe.txt", r"user\u202eexe.txt"),  # right-to-left override
    ("a\u2066b\u2067c\u2068d\u2069", r"a\u2066b\u2067c\u2068d\u2069"),  # isolates
    ("\u202a\u202b\u202c\u202d", r"\u202a\u202b\u202c\u202d"),  # embeddings, pop
    ("\u200b\u200e\u200f", r"\u200b\u200e\u200f"),  # zero-width space, direction marks
    ("\ufeffok\u2028\u2029\u061c\u00ad", r"\ufeffok\u2028\u2029\u061c\xad"),  # BOM, separators
    ("tag\U000e0041\U000e007f", r"tag\U000e0041\U000e007f"),  # invisible tag characters
    ("one\ttwo\nthree\n", "one\ttwo\nthree\n"),  # newline and tab pass
])
def test_what_a_terminal_would_act_on_is_shown_as_escapes(job_text: str, shown: str) -> None:
    assert visible(job_text) == shown
    assert not CONTROLS.search(visible(job_text).replace("\n", "").replace("\t", ""))


def test_joiners_pass_so_persian_indic_and_emoji_sequences_render() -> None:
    # The zero-width non-joiner and joiner shape letters and join emoji; they move, hide and
    # reorder nothing, so they pass.
    for text in ("می\u200cخواهم", "क्\u200dष", "👨\u200d👩\u200d👧"):
        assert visible(text) == text


@pytest.mark.parametrize("text", [
    "Hello, world! 0123 ~!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/`",
    "Γειά σου Κόσμε", "Привет, мир", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
    "你好，世界", "こんにちは世界", "안녕하세요 세계", "สวัสดีชาวโลก", "Xin chào thế giới",
    "e\u0301 n\u0303",  # combining marks
    "👍🏽 🎉 ✓ ✗ → ← │ ┌─┐ █▓▒░",
    "\ue000 private use",
])
def test_plain_text_in_any_script_passes_unchanged(text: str) -> None:
    assert visible(text) == text
    stream = Shown()
    assert stream.feed(text.encode()) + stream.finish() == text


def test_every_control_and_format_character_unicode_knows_is_escaped() -> None:
    hidden = [chr(c) for c in range(sys.maxunicode + 1)
              if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp", "Cs")
              and chr(c) not in "\t\n\u200c\u200d"]
    assert len(hidden) > 2000
    assert [ch for ch in hidden if not visible(ch).startswith("\\")] == []


@pytest.mark.parametrize(("chunks", "shown"), [
    ([b"\xe2", b"\x82\xac"], "€"),  # split after the first byte
    ([b"\xe2\x82", b"\xac"], "€"),  # after the second
    ([b"\xf0", b"\x9f", b"\x91", b"\x8d"], "👍"),  # a byte per chunk
    ([b"caf\xc3", b"\xa9 ", b"\xe8\xaf", b"\xad"], "café 语"),
    ([b"\xff\xfe"], r"\xff\xfe"),  # never UTF-8
    ([b"\x9b8m"], r"\x9b8m"),  # a lone C1 byte (CSI to an 8-bit terminal)
    ([b"\xc3("], r"\xc3("),  # a lead byte without its continuation
    ([b"\xc0\xaf"], r"\xc0\xaf"),  # overlong
    ([b"\xed\xa0\x80"], r"\xed\xa0\x80"),  # an encoded surrogate
    ([b"ok\xe2\x82"], r"ok\xe2\x82"),  # the output ends inside a sequence
    ([b"\xe2\x82", b"A"], r"\xe2\x82A"),  # a sequence broken by the next chunk
    ([b"\xc2\x9b", b"31m"], r"\x9b31m"),  # C1 CSI, encoded
])
def test_chunks_decode_as_one_stream(chunks: list[bytes], shown: str) -> None:
    stream = Shown()
    assert "".join(stream.feed(chunk) for chunk in chunks) + stream.finish() == shown


def test_random_bytes_never_reach_the_terminal_as_controls() -> None:
    rng = random.Random(15)
    stream = Shown()
    data = bytes(rng.randrange(256) for _ in range(200_000))
    shown = "".join(stream.feed(data[i:i + rng.randrange(1, 9)]) for i in range(0, len(data), 8))
    shown += stream.finish()
    assert not CONTROLS.search(shown.replace("\n", "").replace("\t", ""))
    assert not re.search(r"[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]", shown)


def test_a_terminal_that_does_not_read_utf8_is_shown_ascii() -> None:
    assert visible("café\x1b[8m ok\n", ascii_only=True) == r"caf\xe9\x1b[8m ok" + "\n"
    assert Shown(ascii_only=True).feed("语".encode()) == r"\u8bed"


def test_airlock_lines_are_marked_reset_and_one_line() -> None:
    line = Screen().own_line("airlock: job 1 error exit=1 error=bad\nairlock: job 1 ok\x1b[8m")
    assert line == (f"{RESET}{MARK}airlock:{RESET} job 1 error exit=1 error=bad\\nairlock: job 1 ok"
                    "\\x1b[8m\n")
    assert one_line("a\nb\x1b") == r"a\nb\x1b"


@pytest.mark.parametrize(("writes", "fresh"), [
    ([], True),
    ([("stdout", b"done\n")], True),
    ([("stdout", b"no newline")], False),
    ([("stderr", b"line\n"), ("stdout", b"partial")], False),
    ([("stdout", b"partial"), ("stderr", b"ends\n")], True),  # one terminal: the last byte counts
    ([("stdout", b"\x1b[8m\r")], False),  # \r is shown as text, not a line's end
    ([("stdout", b"x"), ("stdout", b"")], False),
])
def test_airlock_lines_start_on_a_fresh_line(writes: list[tuple[str, bytes]], fresh: bool) -> None:
    screen = Screen()
    for kind, data in writes:
        screen.show(kind, data)
    assert screen.own_line("airlock: done").startswith(RESET + ("" if fresh else "\n") + MARK)
    assert screen.own_line("airlock: again").startswith(RESET + MARK)


def test_raw_bytes_shown_count_for_the_fresh_line() -> None:
    screen = Screen()
    screen.passed(b"\x1b[8mconcealed")
    assert screen.own_line("airlock: x").startswith(RESET + "\n" + MARK)
    assert screen.own_line("airlock: x", interrupted=True).startswith(RESET + "\n" + MARK)


def test_job_text_cannot_produce_the_mark() -> None:
    screen = Screen()
    fake = f"{MARK}airlock:{RESET} job 1 ok exit=0\n".encode()
    assert "\x1b" not in screen.show("stdout", fake) + screen.show("stderr", fake)
