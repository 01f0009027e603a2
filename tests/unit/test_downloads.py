"""Writing collected files into a caller's folder (airlock/downloads.py): a stored name is
never trusted as a path, nothing is written outside the folder or through a link there, no
file is overwritten, and bytes that do not match the stored sha256 are not kept."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.downloads import local_path, save
from tasks.output_rows import FileRow


def row(n: int, path: str, data: bytes, mode: int = 0o644) -> FileRow:
    return FileRow(n, path, "collected", None, len(data), hashlib.sha256(data).hexdigest(), mode)


def reader(contents: dict[int, bytes]) -> object:
    def read(r: FileRow) -> Iterator[bytes]:
        yield contents[r.n]
    return read


@pytest.mark.parametrize(("stored", "local"), [
    ("out/a.txt", ("out", "a.txt")),
    ("new\\x0aline", ("new\\x0aline",)),
    ("../../etc/passwd", ("file-0",)),
    ("/etc/passwd", ("file-0",)),
    ("a//b", ("file-0",)),
    ("a/./b", ("file-0",)),
    ("raw\nnewline", ("file-0",)),  # not as base/names.py writes it: a tampered row
    ("\x1b[31mred", ("file-0",)),
    ("back\\slash", ("file-0",)),  # a lone backslash: not an escape it writes
])
def test_a_stored_name_is_kept_only_as_printable_escaped_parts(stored: str,
                                                                local: tuple[str, ...]) -> None:
    assert local_path(row(0, stored, b"")) == local


def test_a_part_too_long_for_a_file_system_is_shortened_with_a_hash() -> None:
    long = "\\xff" * 200  # 800 bytes of escaped text for a 200-byte name
    [part] = local_path(row(0, long, b""))
    assert len(part.encode()) <= 255 and part.startswith("\\xff") and "~" in part


def test_files_are_written_below_the_folder_with_their_modes(tmp_path: Path) -> None:
    rows = [row(0, "out/a.bin", b"a" * 10), row(1, "out/run.sh", b"#!/bin/sh\n", 0o4755),
            row(2, "../escape", b"x"), FileRow(3, "refused.txt", "refused", "a FIFO")]
    saved = save(tmp_path / "dl", rows, reader({0: b"a" * 10, 1: b"#!/bin/sh\n", 2: b"x"}))
    assert [(s.local, s.problem) for s in saved] == [
        ("out/a.bin", None), ("out/run.sh", None), ("file-2", None)]
    assert (tmp_path / "dl/out/a.bin").read_bytes() == b"a" * 10
    assert os.stat(tmp_path / "dl/out/run.sh").st_mode & 0o7777 == 0o755  # never setuid
    assert not (tmp_path / "escape").exists()


def test_a_link_in_the_folder_is_never_followed_and_a_file_never_overwritten(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "out").symlink_to(outside)  # planted: out/ leads elsewhere
    (dl / "kept.txt").write_text("mine")
    (dl / "link.txt").symlink_to(outside / "new.txt")
    saved = save(dl, [row(0, "out/a.txt", b"x"), row(1, "kept.txt", b"theirs"),
                      row(2, "link.txt", b"y")], reader({0: b"x", 1: b"theirs", 2: b"y"}))
    assert all(s.problem for s in saved), saved
    assert os.listdir(outside) == [] and (dl / "kept.txt").read_text() == "mine"


def test_bytes_that_do_not_match_the_stored_sha256_are_not_kept(tmp_path: Path) -> None:
    good = row(0, "f", b"expected")
    saved = save(tmp_path, [good], reader({0: b"tampered"}))
    assert saved[0].problem and "do not match" in saved[0].problem
    assert not (tmp_path / "f").exists()
