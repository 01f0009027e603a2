"""How a stored file is answered: ranges, conditionals and headers (airlock/api/delivery.py)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from airlock.api.delivery import Answer, answer, byte_range, digest, disposition, headers

SHA = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(("header", "expected"), [
    (None, Answer(200, 0, 100)),
    ("bytes=0-9", Answer(206, 0, 10)),
    ("bytes=90-", Answer(206, 90, 100)),
    ("bytes=90-500", Answer(206, 90, 100)),  # past the end: cut at it
    ("bytes=-10", Answer(206, 90, 100)),
    ("bytes=-500", Answer(206, 0, 100)),
    ("BYTES = 5 - 5", Answer(206, 5, 6)),
    ("bytes=100-", Answer(416)),
    ("bytes=100-200", Answer(416)),
    ("bytes=-0", Answer(416)),
    ("bytes=9-3", Answer(200, 0, 100)),  # invalid: ignored
    ("bytes=0-1,5-6", Answer(200, 0, 100)),  # several: the whole file
    ("items=0-1", Answer(200, 0, 100)),
    ("bytes=-", Answer(200, 0, 100)),
    ("bytes=" + "9" * 30 + "-", Answer(200, 0, 100)),
])
def test_one_range_is_206_one_past_the_end_416_the_rest_ignored(header: str | None,
                                                                 expected: Answer) -> None:
    assert byte_range(header, 100) == expected


def test_an_empty_file_has_no_range_to_give() -> None:
    assert byte_range("bytes=0-", 0) == Answer(416)
    assert byte_range("bytes=-1", 0) == Answer(416)
    assert byte_range(None, 0) == Answer(200, 0, 0)


def test_if_none_match_with_the_tag_is_304_and_if_range_must_match_to_keep_the_range() -> None:
    tag = f'"{SHA}"'
    assert answer(10, SHA, None, tag, None).status == 304
    assert answer(10, SHA, None, f'"other", W/{tag}', None).status == 304
    assert answer(10, SHA, "bytes=0-0", "*", None).status == 304
    assert answer(10, SHA, None, '"other"', None) == Answer(200, 0, 10)
    assert answer(10, SHA, "bytes=0-0", None, tag) == Answer(206, 0, 1)
    assert answer(10, SHA, "bytes=0-0", None, '"stale"') == Answer(200, 0, 10)
    assert answer(10, SHA, "bytes=0-0", None, "Sat, 05 Dec 2026 10:00:00 GMT") == Answer(200, 0, 10)


def test_repr_digest_is_the_base64_of_the_sha256() -> None:
    assert digest(SHA) == f"sha-256=:{base64.b64encode(hashlib.sha256(b'x').digest()).decode()}:"


@pytest.mark.parametrize(("path", "expected"), [
    ("out/report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
    ("a\\x0ab", "attachment; filename=\"a_x0ab\"; filename*=UTF-8''a%5Cx0ab"),
    ("résumé \"1\".txt",
     "attachment; filename=\"r_sum_ _1_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.txt"),
    ("100%;x=y", "attachment; filename=\"100_;x=y\"; filename*=UTF-8''100%25%3Bx%3Dy"),
    ("a\nb\r\x00\udcff", "attachment; filename=\"a_b___\"; filename*=UTF-8''a%0Ab%0D%00%5Cudcff"),
])
def test_the_download_name_is_never_raw_in_the_header(path: str, expected: str) -> None:
    shown = disposition(path)
    assert shown == expected
    assert shown.isascii() and all(" " <= c <= "~" for c in shown)


def test_headers_of_each_answer() -> None:
    whole = headers("o/a.bin", 10, SHA, Answer(200, 0, 10))
    assert (whole["Content-Length"], whole["ETag"], whole["Accept-Ranges"]) == ("10", f'"{SHA}"',
                                                                               "bytes")
    assert "Content-Range" not in whole
    part = headers("o/a.bin", 10, SHA, Answer(206, 2, 5))
    assert (part["Content-Length"], part["Content-Range"]) == ("3", "bytes 2-4/10")
    assert headers("o/a.bin", 10, SHA, Answer(416))["Content-Range"] == "bytes */10"
    assert "Content-Length" not in headers("o/a.bin", 10, SHA, Answer(304))
