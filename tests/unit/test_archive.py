"""Files in: a tar archive in the contract (tasks/archive.py through tasks/contract.py); pure.
Every refusal names the member; what is unpacked is regular files, with their execute bit."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile

import pytest

from base.errors import JobSpecError
from config.settings import Settings
from tasks.contract import resolve

S = Settings()
MiB = 1024**2


def tar(*members: tuple[str, bytes | None, dict[str, object]], gz: bool = False) -> str:
    """base64 of a tar of (name, content or None for a folder, TarInfo attributes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, attrs in members:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            info.mode = 0o755 if data is None else 0o644
            for key, value in attrs.items():
                setattr(info, key, value)
            info.size = len(data or b"") if info.type == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if data is not None and info.isreg() else None)
    raw = buf.getvalue()
    return base64.b64encode(gzip.compress(raw) if gz else raw).decode()


def job(archive: str, **fields: object) -> dict[str, object]:
    return {"code": "print(1)", "archive_b64": archive, **fields}


def refused(spec: object, s: Settings = S) -> str:
    with pytest.raises(JobSpecError) as info:
        resolve(spec, s)
    assert info.value.field == "archive_b64" or info.value.field == "files", str(info.value)
    text = str(info.value)
    assert text.isprintable() and len(text) < 420, text
    return text


@pytest.mark.parametrize("gz", [False, True])
def test_an_archive_unpacks_into_files_with_their_execute_bits(gz: bool) -> None:
    archive = tar(("./", None, {}), ("./src", None, {}), ("./src/app.py", b"print(2)\n", {}),
                  ("./run.sh", b"#!/bin/sh\n", {"mode": 0o700}), ("data.bin", bytes(256), {}),
                  gz=gz)
    _, done = resolve(job(archive, files={"notes.txt": "n"}), S)
    assert done.files == {"main.py": b"print(1)", "notes.txt": b"n", "src/app.py": b"print(2)\n",
                          "run.sh": b"#!/bin/sh\n", "data.bin": bytes(256)}
    assert done.executable == {"run.sh"}


@pytest.mark.parametrize(("member", "says"), [
    (("link", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/shadow"}), "a symbolic link"),
    (("hard", b"", {"type": tarfile.LNKTYPE, "linkname": "main.py"}), "a hard link"),
    (("tty", b"", {"type": tarfile.CHRTYPE, "devmajor": 5, "devminor": 0}), "a character device"),
    (("disk", b"", {"type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0}), "a block device"),
    (("pipe", b"", {"type": tarfile.FIFOTYPE}), "a FIFO"),
    (("/etc/cron.d/x", b"x", {}), "absolute"),
    (("../../etc/passwd", b"x", {}), "goes up"),
    (("a/../../b", b"x", {}), "goes up"),
    (("new\nline", b"x", {}), "control character"),
    (("x" * 256, b"x", {}), "over 255 bytes"),
])
def test_links_devices_and_paths_out_of_the_workspace_are_refused_naming_the_member(
        member: tuple[str, bytes, dict[str, object]], says: str) -> None:
    text = refused(job(tar(("ok.txt", b"fine", {}), member)))
    assert says in text, text
    assert f"member '{member[0][:20].replace(chr(10), chr(92) + 'n')}" in text, text


def test_a_name_that_is_not_utf8_is_refused() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as t:
        info = tarfile.TarInfo("bad\udcffname")
        t.addfile(info, io.BytesIO(b""))
    assert "not UTF-8" in refused(job(base64.b64encode(buf.getvalue()).decode()))


def test_caps_count_each_and_total_name_the_member_past_them() -> None:
    s = Settings(max_files=3, max_file_bytes=10, max_files_bytes=25)
    assert "member 'big' is 11 bytes, over the cap of 10" in refused(
        job(tar(("big", b"x" * 11, {}))), s)
    assert "member 'c' takes the files past the cap of 25" in refused(
        job(tar(("a", b"x" * 10, {}), ("b", b"x" * 10, {}), ("c", b"x" * 6, {}))), s)
    assert "member 'd' is past the cap of 3 files" in refused(
        job(tar(*[(n, b"", {}) for n in "abcd"])), s)
    # the archive's files and the others count together
    assert "files: 4 files is over the cap of 3" in refused(
        job(tar(("a", b"", {}), ("b", b"", {})), files={"c": "", "d": ""}), s)


def test_the_files_must_fit_the_jobs_disk_bound() -> None:
    s = Settings(max_file_bytes=20 * MiB, max_files_bytes=20 * MiB,
                 minimums={"disk_bytes": 1 * MiB})
    text = refused(job(tar(("a", b"x" * (2 * MiB), {})), limits={"disk_bytes": MiB}), s)
    assert "do not fit the job's disk bound" in text


def test_a_gzip_bomb_is_refused_before_it_is_inflated_whole() -> None:
    bomb = base64.b64encode(gzip.compress(b"\0" * (64 * MiB))).decode()  # about 64 KiB
    assert "inflates past" in refused(job(bomb))


@pytest.mark.parametrize("data", [b"not a tar at all" * 40, b"", gzip.compress(b"x")[:-5]])
def test_something_that_is_not_a_tar_is_refused(data: bytes) -> None:
    text = refused(job(base64.b64encode(data).decode()))
    assert "archive_b64: " in text


def test_a_member_twice_or_beside_another_file_is_refused() -> None:
    assert "appears twice" in refused(job(tar(("a", b"1", {}), ("a", b"2", {}))))
    with pytest.raises(JobSpecError, match="needs a folder"):
        resolve(job(tar(("a/b", b"1", {})), files={"a": "x"}), S)
    with pytest.raises(JobSpecError, match="same path as code"):
        resolve(job(tar(("main.py", b"evil", {}))), S)
