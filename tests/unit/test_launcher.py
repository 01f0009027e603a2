"""The launcher (workers/launcher.c), built from this tree's source and fed frames on the host.

It runs fine outside a container as a normal child: files land in a temporary cwd, and instead
of kill(-1) (only as PID 1) it kills the job's process group. Under ``unshare --pid`` it is
PID 1 of a fresh namespace, as in a job container, and kills every process in it.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
import pytest

from tests.launcher_frame import decode
from workers import launcher, pipes
from workers.launcher import encode_payload
from workers.runner import LAUNCHER_UP_S

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-launcher.sh"
PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="session")
def init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """workers/launcher.c compiled with the build script's own flags."""
    flags = re.search(r"^CFLAGS=\((.*)\)$", BUILD_SCRIPT.read_text(), re.M)
    assert flags is not None
    out = tmp_path_factory.mktemp("launcher") / "airlock-init"
    subprocess.run(["gcc", *flags.group(1).split(), "-o", str(out), str(launcher.SOURCE)],
                   check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder


def frame(cwd: Path, argv: list[str], *, env: Mapping[str, str] | None = None,
          files: Mapping[str, bytes] | None = None, deadline_s: float = 20.0) -> bytes:
    return encode_payload(argv=argv, env={"PATH": PATH} if env is None else env,
                          files=files or {}, deadline_s=deadline_s, cwd=str(cwd))


def run(init: Path, stdin: bytes, *, wait_s: int = 10, umask: int = -1, timeout: float = 30,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*prefix, str(init), str(wait_s)], input=stdin, capture_output=True,
                          timeout=timeout, umask=umask)


def gone(pid: int, within_s: float = 5.0) -> bool:
    """The process ended (a zombie waiting for its new parent counts as ended)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


# --- the frame ------------------------------------------------------------------------------

def test_the_frame_round_trips() -> None:
    payload = encode_payload(argv=["python3", "-u", "main.py", "é", ""],
                             env={"PATH": "/bin", "EMPTY": "", "EQ": "a=b"},
                             files={"main.py": b"print(1)\n", "d/e/bin": bytes(range(256))},
                             deadline_s=605.0, cwd="/workspace")
    assert payload.startswith(b"AIRLOCK1 ")
    got = decode(payload + b"the job's stdin")
    assert got.argv == ["python3", "-u", "main.py", "é", ""]
    assert got.env == {"PATH": "/bin", "EMPTY": "", "EQ": "a=b"}
    assert got.files == {"main.py": b"print(1)\n", "d/e/bin": bytes(range(256))}
    assert (got.deadline_ms, got.cwd, got.rest) == (605_000, "/workspace", b"the job's stdin")
    assert got.modes == {"main.py": 0o644, "d/e/bin": 0o644}
    marked = decode(encode_payload(argv=["true"], env={}, files={"run.sh": b"", "x": b""},
                                   executable={"run.sh"}, deadline_s=1.0))
    assert marked.modes == {"run.sh": 0o755, "x": 0o644}


@pytest.mark.parametrize(("change", "error"), [
    ({"argv": []}, "argv is empty"),
    ({"argv": ["a\0b"]}, "NUL"),
    ({"env": {"A": "x\0"}}, "NUL"),
    ({"env": {"A=B": "x"}}, "has '='"),
    ({"env": {"": "x"}}, "empty"),
    ({"files": {"a\0b": b""}}, "NUL"),
    ({"deadline_s": -1.0}, "out of range"),
    ({"deadline_s": float("nan")}, "out of range"),
    ({"deadline_s": 2.0**32}, "out of range"),
    ({"cwd": "workspace"}, "absolute"),
    ({"files": {"big": b"\0" * (launcher.MAX_BODY + 1)}}, "over"),
])
def test_the_encoder_refuses_what_the_launcher_would(change: dict[str, object], error: str) -> None:
    fields: dict[str, object] = {"argv": ["true"], "env": {}, "files": {}, "deadline_s": 1.0}
    with pytest.raises(ValueError, match=error):
        encode_payload(**(fields | change))  # type: ignore[arg-type]


# --- running a job --------------------------------------------------------------------------

def test_files_land_under_cwd_with_fixed_modes_whatever_the_umask(init: Path, cwd: Path) -> None:
    files = {"main.py": b"print(1)\n", "a/b/c.bin": bytes(range(256)) * 64, "a/empty": b""}
    done = run(init, frame(cwd, ["/bin/true"], files=files), umask=0)
    assert done.returncode == 0, done.stderr
    for name, data in files.items():
        assert (cwd / name).read_bytes() == data
        assert (cwd / name).stat().st_mode & 0o7777 == 0o644
    assert (cwd / "a").stat().st_mode & 0o7777 == 0o755
    assert (cwd / "a" / "b").stat().st_mode & 0o7777 == 0o755


def test_an_executable_file_is_written_0755_and_runs(init: Path, cwd: Path) -> None:
    files = {"bin/hello": b"#!/bin/sh\necho hello from $0\n", "data": b"x"}
    payload = encode_payload(argv=["./bin/hello"], env={"PATH": PATH}, files=files,
                             executable={"bin/hello"}, deadline_s=20.0, cwd=str(cwd))
    done = run(init, payload, umask=0o077)
    assert done.returncode == 0 and done.stdout == b"hello from ./bin/hello\n", done.stderr
    assert (cwd / "bin/hello").stat().st_mode & 0o7777 == 0o755
    assert (cwd / "data").stat().st_mode & 0o7777 == 0o644


@pytest.mark.parametrize("mode", [0o4755, 0o777, 0o600, 0])
def test_a_file_mode_other_than_0644_or_0755_is_a_malformed_frame(init: Path, cwd: Path,
                                                                  mode: int) -> None:
    payload = bytearray(encode_payload(argv=["/bin/true"], env={}, files={"f": b"x"},
                                       executable={"f"}, deadline_s=5.0, cwd=str(cwd)))
    at = payload.rindex(struct.pack(">I", 0o755))
    payload[at:at + 4] = struct.pack(">I", mode)
    done = run(init, bytes(payload))
    assert done.returncode == launcher.EXIT_BAD_PAYLOAD, done.stderr
    assert not (cwd / "f").exists()


def test_the_jobs_stdin_follows_the_frame_intact(init: Path, cwd: Path) -> None:
    data = os.urandom(2 << 20) + b"\n\nAIRLOCK1 12\n"  # raw bytes, newlines, a fake header
    done = run(init, frame(cwd, ["cat"]) + data)
    assert done.returncode == 0 and done.stdout == data, (done.returncode, done.stderr)


def test_the_job_gets_exactly_its_argv_env_and_cwd(init: Path, cwd: Path) -> None:
    env = {"A": "1", "EQ": "x=y", "EMPTY": "", "SPACE": " a b ", "U": "é", "LC_ALL": "C.UTF-8"}
    code = "import os, sys; sys.stdout.write(repr((sys.argv[1:], dict(os.environ), os.getcwd())))"
    py = shutil.which("python3")
    assert py is not None
    done = run(init, frame(cwd, [py, "-I", "-S", "-c", code, "", "two words"], env=env))
    assert done.returncode == 0, done.stderr
    assert eval(done.stdout) == (["", "two words"], env, str(cwd))


def test_argv0_is_looked_up_on_the_jobs_path(init: Path, cwd: Path, tmp_path: Path) -> None:
    bin_dir, locked = tmp_path / "bin", tmp_path / "locked"
    bin_dir.mkdir()
    locked.mkdir()
    probe = bin_dir / "airlock-probe"
    probe.write_text("#!/bin/sh\necho found\n")
    probe.chmod(0o755)
    (locked / "airlock-probe").write_text("#!/bin/sh\necho locked\n")  # not executable
    env = {"PATH": f"/nonexistent:{bin_dir}"}
    done = run(init, frame(cwd, ["airlock-probe"], env=env))
    assert (done.returncode, done.stdout) == (0, b"found\n"), done.stderr
    # Not on the host's PATH: the job's. A hit that cannot run beats later misses (EACCES).
    done = run(init, frame(cwd, ["airlock-probe"], env={"PATH": f"{locked}:/nonexistent"}))
    assert done.returncode == 127
    assert done.stderr == b"airlock: cannot run 'airlock-probe': Permission denied\n"
    done = run(init, frame(cwd, ["true"], env={}))  # no PATH: /bin:/usr/bin, as Python's
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("argv", "code", "stderr"), [
    (["sh", "-c", "exit 3"], 3, b""),
    (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM, b""),
    (["no-such-program"], 127, b"airlock: cannot run 'no-such-program': No such file or directory\n"),
    (["/no/such/file"], 127, b"airlock: cannot run '/no/such/file': No such file or directory\n"),
])
def test_the_jobs_status_is_the_launchers(init: Path, cwd: Path, argv: list[str], code: int,
                                          stderr: bytes) -> None:
    done = run(init, frame(cwd, argv))
    assert (done.returncode, done.stderr) == (code, stderr)


def test_the_job_starts_with_no_signal_blocked_or_ignored(init: Path, cwd: Path) -> None:
    done = run(init, frame(cwd, ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]))
    assert done.stdout.split() == [b"SigBlk:", b"0" * 16, b"SigIgn:", b"0" * 16], done.stderr


def test_the_deadline_kills_a_sleeping_job_with_137(init: Path, cwd: Path) -> None:
    t0 = time.monotonic()
    done = run(init, frame(cwd, ["sh", "-c", "echo $$; exec sleep 60"], deadline_s=0.5))
    elapsed = time.monotonic() - t0
    assert done.returncode == 137, done.stderr
    assert 0.4 < elapsed < 10, elapsed
    assert gone(int(done.stdout))


def test_the_job_ending_kills_what_it_left_behind(init: Path, cwd: Path) -> None:
    done = run(init, frame(cwd, ["sh", "-c", "sleep 60 & echo $!; exit 4"]))
    assert done.returncode == 4, done.stderr
    assert gone(int(done.stdout))


@pytest.fixture
def pid_namespace() -> tuple[str, ...]:
    return ("unshare", "--pid", "--fork", "--kill-child")


def test_as_pid_1_it_kills_every_process_of_its_namespace(init: Path, cwd: Path,
                                                           pid_namespace: tuple[str, ...]) -> None:
    """As in a job container: daemons that left the job's session die with it, at the job's end
    and at the deadline."""
    mark = f"{1_000_000 + uuid.uuid4().int % 1_000_000}"

    def sleepers() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and p.info["cmdline"][-1] == mark]

    daemon = f"setsid sh -c 'trap \"\" TERM HUP; sleep {mark}' & setsid nohup sleep {mark} &"
    try:
        done = run(init, frame(cwd, ["sh", "-c", f"{daemon} sleep 0.3; exit 5"]),
                   prefix=pid_namespace)
        assert done.returncode == 5, done.stderr
        assert all(gone(pid) for pid in sleepers()), sleepers()
        done = run(init, frame(cwd, ["sh", "-c", f"{daemon} exec sleep {mark}"], deadline_s=0.5),
                   prefix=pid_namespace)
        assert done.returncode == 137, done.stderr
        assert all(gone(pid) for pid in sleepers()), sleepers()
    finally:
        for pid in sleepers():
            os.kill(pid, signal.SIGKILL)


def test_as_pid_1_no_signal_from_the_job_ends_it(init: Path, cwd: Path,
                                                 pid_namespace: tuple[str, ...]) -> None:
    """PID 1 keeps no signal handler once its job arrived, so the kernel drops every signal a
    process of its namespace sends it (SIGKILL and SIGSTOP included)."""
    kills = "; ".join(f"kill -{sig} 1" for sig in ("ALRM", "TERM", "INT", "HUP", "USR1", "STOP",
                                                   "KILL"))
    done = run(init, frame(cwd, ["sh", "-c", f"{kills}; sleep 0.2; exit 7"]), prefix=pid_namespace)
    assert (done.returncode, done.stderr) == (7, b"")


# --- files: never through a symlink ---------------------------------------------------------

def test_a_planted_symlink_is_not_followed(init: Path, cwd: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (cwd / "main.py").symlink_to(outside / "target")
    (cwd / "d").symlink_to(outside)
    done = run(init, frame(cwd, ["/bin/true"], files={"main.py": b"x"}))
    assert (done.returncode, done.stderr) == (126, b"airlock: cannot write 'main.py': File exists\n")
    done = run(init, frame(cwd, ["/bin/true"], files={"d/f": b"x"}))
    assert done.returncode == 126 and done.stderr.startswith(b"airlock: cannot write 'd/f': ")
    (cwd / "e").mkdir()
    (cwd / "e" / "g").symlink_to(outside)
    done = run(init, frame(cwd, ["/bin/true"], files={"e/g/h/f": b"x"}))
    assert done.returncode == 126 and done.stderr.startswith(b"airlock: cannot write 'e/g/h/f': ")
    assert list(outside.iterdir()) == []


# --- no payload, a short one, a malformed one -----------------------------------------------

def test_no_job_in_time_exits_125(init: Path) -> None:
    read_end, write_end = os.pipe()  # stdin stays open, and silent
    try:
        t0 = time.monotonic()
        done = subprocess.run([str(init), "1"], stdin=read_end, capture_output=True, timeout=15)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (done.returncode, done.stderr) == (125, b"airlock: no job arrived in time\n")
    assert 0.9 < time.monotonic() - t0 < 10


def test_an_empty_or_cut_stdin_exits_125(init: Path, cwd: Path) -> None:
    assert run(init, b"").stderr == b"airlock: no payload\n"
    payload = frame(cwd, ["/bin/true"], env={"A": "b"}, files={"f": b"data"})
    header = payload.index(b"\n") + 1
    for cut in range(len(payload)):
        done = run(init, payload[:cut])
        want = b"airlock: no payload\n" if cut < header else b"airlock: payload cut short\n"
        assert (done.returncode, done.stderr) == (125, want), cut
    assert list(cwd.iterdir()) == []  # nothing written from a partial frame


def body(*parts: bytes | int) -> bytes:
    return b"".join(struct.pack(">I", p) if isinstance(p, int) else p for p in parts)


def s(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text + b"\0"


CWD = s(b"/tmp")
GOOD = body(1000, CWD, 1, s(b"/bin/true"), 0, 0)
MALFORMED = {
    "bad magic": b"AIRLOCK2 5\n",
    "no length": b"AIRLOCK1 \n",
    "not digits": b"AIRLOCK1 1x\n",
    "negative": b"AIRLOCK1 -1\n",
    "over the max body": b"AIRLOCK1 67108865\n",
    "endless digits": b"AIRLOCK1 " + b"9" * 40 + b"\n",
    "endless header": b"AIRLOCK1 " + b"1" * 30,
    "bytes after the last file": GOOD + b"x",
    "no argv": body(1000, CWD, 0, 0, 0),
    "argc past the body": body(1000, CWD, 0xFFFFFFFF, s(b"/bin/true"), 0, 0),
    "string past the body": body(1000, CWD, 1, 0xFFFFFFFF, b"/bin/true\0", 0, 0),
    "string one past the body": body(1000, CWD, 1, 10, b"/bin/true\0"),
    "no NUL after a string": body(1000, CWD, 1, 9, b"/bin/truex", 0, 0),
    "NUL inside a string": body(1000, CWD, 1, 9, b"/bin\0true\0", 0, 0),
    "relative cwd": body(1000, s(b"tmp"), 1, s(b"/bin/true"), 0, 0),
    "env without =": body(1000, CWD, 1, s(b"/bin/true"), 1, s(b"PATH"), 0),
    "env without a name": body(1000, CWD, 1, s(b"/bin/true"), 1, s(b"=x"), 0),
    "file count past the body": body(1000, CWD, 1, s(b"/bin/true"), 0, 70000),
    "file data past the body": body(1000, CWD, 1, s(b"/bin/true"), 0, 1, s(b"f"), 100, b"x"),
    **{f"file name {name!r}": body(1000, CWD, 1, s(b"/bin/true"), 0, 1, s(name), 0)
       for name in (b"", b"/etc/x", b"..", b"../x", b"a/../b", b"a//b", b".", b"a/.", b"a/",
                    b"x" * 256, b"d/" + b"x" * 256)},
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_frame_exits_126_and_runs_nothing(init: Path, name: str) -> None:
    raw = MALFORMED[name]
    payload = raw if raw.startswith(b"AIRLOCK") else b"AIRLOCK1 %d\n" % len(raw) + raw
    done = run(init, payload + b"more stdin")
    assert (done.returncode, done.stderr) == (126, b"airlock: malformed payload\n"), name
    assert done.stdout == b""


def test_a_well_formed_hand_made_frame_runs(init: Path) -> None:
    done = run(init, b"AIRLOCK1 %d\n" % len(GOOD) + GOOD)
    assert (done.returncode, done.stderr) == (0, b"")


def test_corrupt_bytes_anywhere_never_crash_it(init: Path, cwd: Path) -> None:
    """Every byte of a frame in turn set to 0x00, "9", 0x7f and 0xff: a launcher failure, a job
    failure or a run, never the launcher killed by a signal (memory errors) or hanging."""
    payload = frame(cwd, ["/bin/true"], env={"A": "b"}, files={"d/f": b"data"}, deadline_s=5)
    seen: set[int] = set()
    for i in range(len(payload)):
        for value in (0x00, 0x39, 0x7F, 0xFF):  # 0x39: "9", a longer frame in the header
            corrupt = bytearray(payload)
            corrupt[i] = value
            done = run(init, bytes(corrupt), timeout=20)
            assert 0 <= done.returncode <= 127, (i, value, done.returncode, done.stderr)
            seen.add(done.returncode)
            shutil.rmtree(cwd)
            cwd.mkdir()
    assert seen == {0, 125, 126, 127}, seen


def test_a_bad_wait_argument_is_refused(init: Path) -> None:
    for args in ([], ["x"], ["-1"], [""]):
        done = subprocess.run([str(init), *args], input=b"", capture_output=True, timeout=10)
        assert done.returncode == 126 and b"usage" in done.stderr, args


# --- the binary a worker binds: present, root's alone, built from this source ---------------

@pytest.fixture
def installed(init: Path, tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "libexec"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    target = folder / "airlock-init"
    shutil.copy(init, target)
    target.chmod(0o755)
    Path(f"{target}.sha256").write_text(f"{launcher.source_sha256()}  workers/launcher.c\n")
    yield target


def test_a_fresh_root_owned_build_passes(installed: Path) -> None:
    assert launcher.check_binary(str(installed)) is None


def test_a_missing_unsafe_or_stale_binary_is_refused_naming_the_fix(installed: Path) -> None:
    path = str(installed)

    def problem() -> str:
        why = launcher.check_binary(path)
        assert why is not None and "scripts/build-launcher.sh" in why
        return why

    installed.chmod(0o775)
    assert "writable by non-root" in problem()
    installed.chmod(0o754)
    assert "not executable" in problem()
    installed.chmod(0o4755)
    assert "set-user/group-ID" in problem()
    installed.chmod(0o755)
    os.chown(installed, 1000, 1000)
    assert "uid 1000" in problem()
    os.chown(installed, 0, 0)
    installed.parent.chmod(0o777)
    assert f"{installed.parent} is writable" in problem()
    installed.parent.chmod(0o755)
    Path(f"{path}.sha256").write_text("0" * 64 + "  workers/launcher.c\n")
    assert "stale" in problem()
    Path(f"{path}.sha256").unlink()
    assert "no recorded source hash" in problem()
    installed.unlink()
    assert "missing" in problem()
    installed.symlink_to("/bin/true")
    assert "not a regular file" in problem()


# --- stdio through FIFOs (workers/pipes.py), as in a job container --------------------------

def _drain(fds: dict[int, str], within_s: float = 20.0) -> dict[str, bytes]:
    got = {name: b"" for name in fds.values()}
    left = set(fds)
    deadline = time.monotonic() + within_s
    while left and time.monotonic() < deadline:
        readable, _, _ = select.select(list(left), [], [], 0.5)
        for fd in readable:
            data = os.read(fd, 65536)
            if data:
                got[fds[fd]] += data
            else:
                left.discard(fd)
    assert not left, "no EOF on the launcher's output FIFOs"
    return got


def test_with_fifo_paths_the_job_talks_only_through_them(init: Path, cwd: Path,
                                                         tmp_path: Path) -> None:
    io = pipes.make(str(tmp_path / "io" / "c1"))
    try:
        # Given a launcher started with the FIFOs' paths and its own stdio elsewhere
        proc = subprocess.Popen([str(init), "10", *(f"{io.folder}/{n}" for n in pipes.FIFOS)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        # Then the worker's stdin open succeeds once it waits on its side (the handshake)
        assert pipes.connect_stdin(io, 10)
        assert io.stdin is not None
        job = "import sys; data = sys.stdin.read(); print(data.upper()); print('e', file=sys.stderr)"
        os.write(io.stdin, frame(cwd, ["python3", "-c", job]) + b"fed on stdin")
        io.close_stdin()
        got = _drain({io.out: "out", io.err: "err"})
        assert got == {"out": b"FED ON STDIN\n", "err": b"e\n"}
        out, err = proc.communicate(timeout=10)
        assert (proc.returncode, out, err) == (0, b"", b"")  # nothing on its own stdio
    finally:
        io.close()
        pipes.remove(io.folder)
    assert not os.path.exists(io.folder)


def test_fifo_modes_let_the_job_write_output_and_read_stdin_only(tmp_path: Path) -> None:
    io = pipes.make(str(tmp_path / "c2"))
    try:
        modes = {n: os.stat(f"{io.folder}/{n}").st_mode & 0o777 for n in pipes.FIFOS}
        assert modes == {"in": 0o604, "out": 0o602, "err": 0o602, "status": 0o602}
        assert os.stat(io.folder).st_mode & 0o777 == 0o700
        assert not pipes.connect_stdin(io, 0.05)  # no launcher: no handshake, no hang
    finally:
        io.close()
        pipes.remove(io.folder)


def test_the_handshake_gives_up_at_once_on_a_launcher_that_quit(init: Path, tmp_path: Path) -> None:
    io = pipes.make(str(tmp_path / "c3"))
    try:
        # Given a launcher that opens the output FIFOs, then fails on its stdin path
        proc = subprocess.Popen([str(init), "10", str(tmp_path / "missing"),
                                 f"{io.folder}/out", f"{io.folder}/err", f"{io.folder}/status"])
        t0 = time.monotonic()
        # Then the handshake is refused as soon as it is gone, not at its timeout
        assert not pipes.connect_stdin(io, 20)
        assert time.monotonic() - t0 < 5
        assert proc.wait(10) == 124
        assert b"cannot open" in os.read(io.err, 4096)
    finally:
        io.close()
        pipes.remove(io.folder)


def test_a_launcher_whose_worker_never_opens_its_stdin_exits_124_soon(init: Path,
                                                                      tmp_path: Path) -> None:
    # A worker that died between the container's start and the handshake: the launcher would
    # otherwise wait for a writer forever (it would never see a payload nor an EOF).
    assert launcher.STDIO_WAIT_S < 60 and LAUNCHER_UP_S < launcher.STDIO_WAIT_S
    io = pipes.make(str(tmp_path / "c4"))
    try:
        t0 = time.monotonic()
        done = subprocess.run([str(init), "2", *(f"{io.folder}/{n}" for n in pipes.FIFOS)],
                              capture_output=True, timeout=15)
        assert done.returncode == 124 and 1.5 < time.monotonic() - t0 < 10
        assert os.read(io.err, 4096) == b"airlock: the worker did not open the stdio FIFOs in time\n"
    finally:
        io.close()
        pipes.remove(io.folder)


def test_a_launcher_that_cannot_open_its_fifos_exits_124(init: Path, tmp_path: Path) -> None:
    missing = [str(tmp_path / n) for n in pipes.FIFOS]
    done = subprocess.run([str(init), "5", *missing], capture_output=True, timeout=15)
    assert done.returncode == 124
    assert done.stderr.startswith(b"airlock: cannot open '" + missing[1].encode())


def test_the_launcher_takes_a_wait_or_a_wait_and_four_paths(init: Path) -> None:
    for args in (["5", "a"], ["5", "a", "b"], ["5", "a", "b", "c"], ["5", "a", "b", "c", "d", "e"]):
        done = subprocess.run([str(init), *args], capture_output=True, timeout=15)
        assert done.returncode == 126 and b"usage" in done.stderr, args


# --- the status channel: the job's real end, where the job cannot write ---------------------

def run_with_status(init: Path, cwd: Path, folder: Path, argv: list[str],
                    deadline_s: float = 20.0) -> tuple[str, int]:
    """Run a job through the four FIFOs; what the status pipe said, and the launcher's exit."""
    io = pipes.make(str(folder))
    try:
        proc = subprocess.Popen([str(init), "10", *(f"{io.folder}/{n}" for n in pipes.FIFOS)])
        assert pipes.connect_stdin(io, 10) and io.stdin is not None
        os.write(io.stdin, frame(cwd, argv, deadline_s=deadline_s))
        io.close_stdin()
        _drain({io.out: "out", io.err: "err"})
        code = proc.wait(10)
        return pipes.read_status(io), code
    finally:
        io.close()
        pipes.remove(io.folder)


@pytest.mark.parametrize(("argv", "kind", "value", "code"), [
    (["python3", "-c", "import os; os._exit(137)"], "exit", 137, 137),
    (["python3", "-c", "import os; os._exit(159)"], "exit", 159, 159),
    (["python3", "-c", "import os; os._exit(3)"], "exit", 3, 3),
    (["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], "signal", 9, 137),
    (["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSYS)"], "signal", 31, 159),
    (["no-such-program"], "launcher", 127, 127),
])
def test_the_status_pipe_tells_an_exit_status_from_a_signal(
        init: Path, cwd: Path, tmp_path: Path, argv: list[str], kind: str, value: int,
        code: int) -> None:
    # The exit status alone cannot tell `exit 137` from a SIGKILL: the status pipe can.
    said, exit_code = run_with_status(init, cwd, tmp_path / "io", argv)
    assert exit_code == code
    status = launcher.parse_status(said)
    assert status is not None and (status.kind, status.value) == (kind, value), said
    assert status.exit_code == code


def test_the_status_pipe_says_when_the_backstop_fired(init: Path, cwd: Path, tmp_path: Path) -> None:
    said, code = run_with_status(init, cwd, tmp_path / "io", ["sleep", "30"], deadline_s=0.5)
    assert code == 137 and launcher.parse_status(said) == launcher.LauncherStatus("deadline", 500)


def test_after_the_handshake_the_status_pipe_is_nobodys_to_open(init: Path, tmp_path: Path) -> None:
    io = pipes.make(str(tmp_path / "c5"))
    try:
        proc = subprocess.Popen([str(init), "10", *(f"{io.folder}/{n}" for n in pipes.FIFOS)])
        assert pipes.connect_stdin(io, 10)
        # The launcher holds it; its mode no longer lets anyone but root (the worker) open it.
        assert os.stat(f"{io.folder}/status").st_mode & 0o777 == pipes.REVOKED
        done = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh",
                               "-c", f"echo 'airlock-status exit 0' > {io.folder}/status"],
                              capture_output=True, timeout=10)
        assert done.returncode != 0 and b"Permission denied" in done.stderr
        io.close_stdin()  # no payload: the launcher gives up, and says so
        assert proc.wait(10) == launcher.EXIT_NO_PAYLOAD
        assert launcher.parse_status(pipes.read_status(io)) == launcher.LauncherStatus(
            "launcher", launcher.EXIT_NO_PAYLOAD)
    finally:
        io.close()
        pipes.remove(io.folder)


@pytest.mark.parametrize(("text", "parsed"), [
    ("airlock-status exit 0\n", ("exit", 0)),
    ("airlock-status signal 9\n", ("signal", 9)),
    ("junk\nairlock-status exit 1\n", ("exit", 1)),
    ("airlock-status launcher 127\nairlock-status exit 127\n", ("launcher", 127)),
    ("airlock-status exit\n", None),
    ("airlock-status bogus 1\n", None),
    ("airlock-status exit -1\n", None),
    ("airlock-status exit 99999999999\n", None),
    ("", None),
])
def test_status_lines_parse_strictly(text: str, parsed: tuple[str, int] | None) -> None:
    status = launcher.parse_status(text)
    assert ((status.kind, status.value) if status else None) == parsed
