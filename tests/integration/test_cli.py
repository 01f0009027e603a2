"""The ``airlock`` command as a person uses it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from config.settings import Settings
from tests.services import ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]


def airlock(settings: Settings, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "airlock.cli", *args], cwd=ROOT, input=stdin,
                          env=worker_env(settings), capture_output=True, timeout=120)


def test_run_prints_output_and_exits_with_the_job_code(settings: Settings, worker: WorkerProcess) -> None:
    done = airlock(settings, "run", "-c", "import sys; print(6*7); sys.exit(3)")
    assert done.stdout == b"42\n"
    assert done.returncode == 3
    assert b"nonzero_exit" in done.stderr.splitlines()[-1]


def test_run_json_exits_0_on_a_verdict(settings: Settings, worker: WorkerProcess) -> None:
    done = airlock(settings, "run", "--json", "--timeout", "1", "-c", "while True: pass")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["verdict"] == "timeout" and record["status"] == "finished"
    shown = airlock(settings, "result", record["id"], "--json")
    assert json.loads(shown.stdout)["id"] == record["id"]


def test_script_file_and_stdin_file(settings: Settings, worker: WorkerProcess, tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    (base / "job.py").write_text("import sys\nprint(sys.stdin.read()[::-1])\n")
    (base / "in.txt").write_text("olleh")
    done = airlock(settings, "run", str(base / "job.py"), "--stdin", str(base / "in.txt"))
    assert (done.returncode, done.stdout) == (0, b"hello\n")


@pytest.mark.parametrize(("args", "field"), [
    (["--timeout", "-1"], "limits.timeout_s"),
    (["--memory", "1t"], "limits.memory_bytes"),
    (["--pids", "100000"], "limits.pids"),
    (["--image", "docker.io/evil:latest"], "profile"),
])
def test_invalid_input_is_refused_naming_the_field(settings: Settings, args: list[str], field: str) -> None:
    done = airlock(settings, "run", "-c", "print(1)", *args)
    assert done.returncode != 0
    assert field.encode() in done.stderr, done.stderr


def test_non_utf8_script_is_refused(settings: Settings, tmp_path: object) -> None:
    from pathlib import Path

    script = Path(str(tmp_path)) / "bad.py"
    script.write_bytes(b"print('\xff')")
    done = airlock(settings, "run", str(script))
    assert done.returncode != 0 and b"UTF-8" in done.stderr


def test_run_an_agent_job_whose_command_runs_in_the_inner_sandbox(
        settings: Settings, worker: WorkerProcess) -> None:
    # The README's `airlock run --image agent`: the SDK is there, and srt with the settings
    # Airlock wrote for the job runs a command in a fresh pid namespace of its own.
    code = ("import subprocess, claude_agent_sdk\n"
            "print(claude_agent_sdk.__version__)\n"
            "subprocess.run(['srt', '--settings', '/etc/airlock/srt-settings.json', '-c',"
            " 'ls /proc | grep -c \"^[0-9]\"; touch /home/appuser/x || echo read-only'], check=True)\n")
    done = airlock(settings, "run", "--image", "agent", "-c", code)
    assert done.returncode == 0, done.stderr
    version, pids, refused = done.stdout.decode().split()[:3]
    # its own processes only: srt's seccomp helper, the shell, ls and grep (outside: 5 and more)
    assert version.count(".") == 2 and int(pids) <= 4 and refused == "read-only", done.stdout
