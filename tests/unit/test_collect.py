"""Collecting files out of a job's workspace (workers/collect.py), on a real folder of the
host: links at any component, FIFOs, sockets, sparse giants, floods of tiny files, odd names,
files changing while read. The worker never blocks, never reads through a link, and says per
file why it refused it. Runs as root (as the worker does), without Docker."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers import beneath
from workers.collect import collect
from workers.collecting import CollectCaps, Collection, Status

MiB = 1024**2
CAPS = CollectCaps(files=1000, file_bytes=64 * MiB, total_bytes=128 * MiB, refusals_listed=100,
                   walk_entries=1_000_000, time_s=20.0)


class Memory:
    """A sink in memory (the spool's ``files`` in production)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._end = 0

    @property
    def end(self) -> int:
        return self._end

    def write_at(self, offset: int, data: memoryview) -> None:
        if len(self.data) < offset + len(data):
            self.data.extend(bytes(offset + len(data) - len(self.data)))
        self.data[offset:offset + len(data)] = data

    def keep(self, end: int) -> None:
        self._end = end


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test with openat2, and with the O_NOFOLLOW walk used where openat2 is missing."""
    beneath.use_openat2(None if request.param == "openat2" else False)
    yield request.param
    beneath.use_openat2(None)


@pytest.fixture
def canary(tmp_path: Path) -> tuple[Path, bytes]:
    """A host file (outside the workspace) holding a random token that must appear nowhere."""
    token = os.urandom(16).hex().encode()
    folder = tmp_path / "host-secrets"
    folder.mkdir()
    (folder / "secret").write_bytes(b"TOKEN=" + token + b"\n")
    return folder / "secret", token


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


def run(ws: Path, *patterns: str, caps: CollectCaps = CAPS,
        sink: Memory | None = None) -> tuple[Collection, Memory]:
    sink = sink or Memory()
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return collect(fd, patterns, caps, sink), sink
    finally:
        os.close(fd)


def content(sink: Memory, out: Collection, path: bytes) -> bytes:
    [entry] = [e for e in out.entries if e.path == path]
    assert entry.status is Status.COLLECTED, entry
    assert entry.offset is not None and entry.size is not None
    return bytes(sink.data[entry.offset:entry.offset + entry.size])


def reasons(out: Collection) -> dict[bytes, str]:
    return {e.path: e.reason or "" for e in out.entries if e.status is Status.REFUSED}


def test_regular_files_are_taken_whole_with_size_mode_and_sha256(ws: Path, resolution: str) -> None:
    (ws / "out" / "deep").mkdir(parents=True)
    (ws / "out" / "a.bin").write_bytes(os.urandom(3 * MiB + 7))
    (ws / "out" / "deep" / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(ws / "out" / "deep" / "run.sh", 0o755)
    (ws / "out" / "empty").write_bytes(b"")
    (ws / "report.pdf").write_bytes(b"%PDF")
    out, sink = run(ws, "out/**", "report.pdf", "missing.txt")
    by = {e.path: e for e in out.entries}
    assert set(by) == {b"out/a.bin", b"out/deep/run.sh", b"out/empty", b"report.pdf"}
    for path, entry in by.items():
        data = (ws / os.fsdecode(path)).read_bytes()
        assert content(sink, out, path) == data
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data)
    assert by[b"out/deep/run.sh"].mode == 0o755 and by[b"report.pdf"].mode == 0o644
    assert out.unmatched == ("missing.txt",)
    assert out.summary()["collected"] == 4 and out.summary()["refused"] == 0


def test_a_link_to_a_host_file_and_a_linked_parent_folder_are_never_followed(
        ws: Path, canary: tuple[Path, bytes], resolution: str) -> None:
    secret, token = canary
    (ws / "out").mkdir()
    (ws / "out" / "secret").symlink_to(secret)  # the link itself named by the pattern
    (ws / "out" / "dir").symlink_to(secret.parent)  # a folder on the way to a named file
    (ws / "out" / "environ").symlink_to("/proc/1/environ")
    (ws / "out" / "up").symlink_to("../../host-secrets/secret")
    (ws / "out" / "dangling").symlink_to("/nonexistent")
    (ws / "linked").symlink_to(secret.parent)
    before = os.stat(secret)
    out, sink = run(ws, "out/**", "out/dir/secret", "linked/secret", "linked/**",
                    "out/secret/x")
    why = reasons(out)
    assert set(why) == {b"out/secret", b"out/dir", b"out/environ", b"out/up", b"out/dangling",
                        b"linked"}, why
    assert all("symbolic link (never followed)" in r for r in why.values()), why
    assert not out.collected and token not in sink.data and b"TOKEN" not in sink.data
    after = os.stat(secret)
    assert (after.st_atime_ns, after.st_mtime_ns) == (before.st_atime_ns, before.st_mtime_ns)


def test_a_link_swapped_in_for_a_folder_after_the_listing_is_refused_by_the_kernel(
        ws: Path, canary: tuple[Path, bytes], resolution: str) -> None:
    """Defence in depth (the job has stopped when the worker reads): even a folder turned into
    a link between the listing and the open is not gone through."""
    secret, token = canary
    (ws / "d").mkdir()
    (ws / "d" / "secret").write_bytes(b"mine")
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(ws / "d", ws / "d.old")
        (ws / "d").symlink_to(secret.parent)
        with pytest.raises(OSError) as info:
            beneath.open_beneath(fd, b"d/secret", beneath.FILE_FLAGS)
        assert info.value.errno in (40, 20)  # ELOOP (openat2), ENOTDIR (O_DIRECTORY|O_NOFOLLOW)
        for escape in (b"../host-secrets/secret", b"d.old/../../host-secrets/secret"):
            with pytest.raises(OSError):
                beneath.open_beneath(fd, escape, beneath.FILE_FLAGS)
    finally:
        os.close(fd)
    assert token


def test_a_hard_link_is_the_jobs_own_file(ws: Path, resolution: str) -> None:
    (ws / "mine").write_bytes(b"the job's bytes")
    os.link(ws / "mine", ws / "hard")
    out, sink = run(ws, "hard")
    assert content(sink, out, b"hard") == b"the job's bytes"


def test_a_fifo_a_socket_and_a_device_are_refused_without_blocking_or_opening(
        ws: Path, resolution: str) -> None:
    os.mkfifo(ws / "fifo")  # no writer: an open for reading without O_NONBLOCK would block
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(ws / "sock"))
        os.mknod(ws / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        result: list[Collection] = []
        worker = threading.Thread(target=lambda: result.append(run(ws, "*")[0]), daemon=True)
        worker.start()
        worker.join(10)
    assert result, "the collector blocked"
    why = reasons(result[0])
    assert why == {b"fifo": "not a regular file: a FIFO", b"sock": "not a regular file: a socket",
                   b"null": "not a regular file: a character device"}


def test_a_sparse_terabyte_is_refused_by_its_apparent_size_without_being_read(
        ws: Path, resolution: str) -> None:
    with open(ws / "huge", "wb") as f:
        f.truncate(1 << 40)
    (ws / "small-sparse").touch()
    os.truncate(ws / "small-sparse", 2 * MiB)
    out, sink = run(ws, "*")
    assert reasons(out) == {b"huge": f"{1 << 40} bytes, over the cap of {64 * MiB} for one file"}
    assert content(sink, out, b"small-sparse") == bytes(2 * MiB)  # at its apparent size
    assert len(sink.data) == 2 * MiB


def test_caps_on_count_each_and_total_refuse_per_file_and_count_past_the_listed_ones(
        ws: Path, resolution: str) -> None:
    (ws / "many").mkdir()
    for i in range(2000):
        (ws / "many" / f"{i:05d}").write_bytes(b"x")
    caps = CollectCaps(files=10, file_bytes=MiB, total_bytes=MiB, refusals_listed=5,
                       walk_entries=1_000_000, time_s=20.0)
    out, _ = run(ws, "many/*", caps=caps)
    assert [e.path for e in out.collected] == [b"many/%05d" % i for i in range(10)]
    assert len(reasons(out)) == 5 and out.unlisted_refusals == 1985
    assert set(reasons(out).values()) == {"over the cap of 10 files"}
    assert out.summary() == {"collected": 10, "bytes": 10, "refused": 1990,
                             "refusals_not_listed": 1985}
    (ws / "big").write_bytes(b"x" * (MiB // 2 + 1))
    (ws / "big2").write_bytes(b"x" * (MiB // 2 + 1))
    out, _ = run(ws, "big*", caps=caps)
    assert [e.path for e in out.collected] == [b"big"]
    assert "would take the total past the cap" in reasons(out)[b"big2"]


def test_a_flood_of_entries_stops_the_walk_at_its_bound(ws: Path, resolution: str) -> None:
    for i in range(3000):
        (ws / f"f{i}").touch()
    caps = CollectCaps(files=100_000, file_bytes=MiB, total_bytes=MiB, refusals_listed=5,
                       walk_entries=1000, time_s=20.0)
    out, _ = run(ws, "*", caps=caps)
    assert out.stopped is not None and "1000 entries" in out.stopped
    assert len(out.collected) <= 1000
    ticks = iter(range(10**6))
    timed = collect(os.open(ws, os.O_RDONLY | os.O_DIRECTORY), ("*",),
                    CAPS, Memory(), clock=lambda: float(next(ticks)))
    assert timed.stopped is not None and "20 s" in timed.stopped


def test_names_with_a_newline_or_invalid_utf8_are_kept_as_bytes_and_shown_escaped(
        ws: Path, resolution: str) -> None:
    odd = [b"new\nline.txt", b"bad\xff\xfe.bin", b"\x1b[31mred", "\u202egnp.exe".encode()]
    for name in odd:
        with open(os.path.join(os.fsencode(ws), name), "wb") as f:
            f.write(name)
    out, sink = run(ws, "*")
    assert {e.path for e in out.collected} == set(odd)
    for name in odd:
        assert content(sink, out, name) == name
    texts = {e.text for e in out.collected}
    assert texts == {"new\\x0aline.txt", "bad\\xff\\xfe.bin", "\\x1b[31mred", "\\u202egnp.exe"}
    assert all(t.isprintable() for t in texts)


class Rewriting(Memory):
    """A sink that rewrites the file being collected while it is read (the job has stopped in
    production: this is what would happen if something still wrote to it)."""

    def __init__(self, path: Path, how: str) -> None:
        super().__init__()
        self.path, self.how, self.done = path, how, False

    def write_at(self, offset: int, data: memoryview) -> None:
        super().write_at(offset, data)
        if not self.done:
            self.done = True
            if self.how == "grow":
                with open(self.path, "ab") as f:
                    f.write(b"more")
            elif self.how == "truncate":
                os.truncate(self.path, 10)
            else:  # same size, other bytes, a later mtime
                with open(self.path, "r+b") as f:
                    f.write(b"Z" * 100)
                st = os.stat(self.path)
                os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("how", ["grow", "truncate", "same-size"])
def test_a_file_changed_while_read_is_refused_and_its_bytes_dropped(
        ws: Path, how: str, resolution: str) -> None:
    (ws / "log").write_bytes(b"A" * (3 * MiB))
    (ws / "next").write_bytes(b"after")
    sink = Rewriting(ws / "log", how)
    out, _ = run(ws, "*", sink=sink)
    assert reasons(out) == {b"log": "changed while it was read"}
    [after] = out.collected
    assert after.path == b"next" and after.offset == 0  # the refused bytes were overwritten
    assert bytes(sink.data[:5]) == b"after"


def test_a_folder_named_by_a_literal_pattern_says_how_to_name_its_files(ws: Path) -> None:
    (ws / "out").mkdir()
    (ws / "out" / "x").write_bytes(b"x")
    out, _ = run(ws, "out")
    assert reasons(out) == {b"out": "not a regular file: a folder: name its files (as in out/**)"}


def test_the_caps_are_the_settings_collect_section_field_for_field() -> None:
    from config.settings import Settings

    s = Settings(collect_max_files=7, collect_time_s=3.0)
    caps = CollectCaps(**s.collect.model_dump())
    assert (caps.files, caps.time_s, caps.walk_entries) == (7, 3.0, 200_000)
