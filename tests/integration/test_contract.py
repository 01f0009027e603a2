"""The strict contract end to end (issue 15, ATTACKS.md A38): bad input through the client, the
CLI and a raw broker message is refused or dropped, nothing is stored, and the worker goes on
serving (a canary job right after completes)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from airlock.client import Airlock
from airlock.records import JobRecord
from base.errors import JobSpecError
from config.settings import Settings
from tasks.queue import TASK_NAME
from tests.bad_jobs import CLASSES, NAN, KiB, MiB
from tests.services import ROOT, WorkerProcess, job_count, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]
Canary = Callable[[], JobRecord]


@pytest.mark.parametrize("name", list(CLASSES))
def test_the_client_refuses_each_class_of_bad_input_and_stores_nothing(
        name: str, client: Airlock, settings: Settings, canary: Canary) -> None:
    before = job_count(settings.database_url)
    for spec, field in CLASSES[name]:
        if spec is None:
            continue  # submit(None) means "the job is in the keyword arguments"
        with pytest.raises(JobSpecError) as refused:
            client.submit(spec)  # type: ignore[arg-type]
        assert refused.value.field == field, str(refused.value)
    assert job_count(settings.database_url) == before
    canary()


def airlock(settings: Settings, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "airlock.cli", *args], cwd=ROOT,
                          env=worker_env(settings), capture_output=True, timeout=120)


CLI_CASES = [
    pytest.param(["-c", "1", "--timeout", "nan"], "limits.timeout_s: ", id="nan"),
    pytest.param(["-c", "1", "--cpus", "inf"], "limits.cpus: ", id="infinity"),
    pytest.param(["-c", "1", "--pids", "many"], "'--pids'", id="a-string-for-a-number"),
    pytest.param(["--env", "NOEQUALS", "-c", "1"], "'--env': 'NOEQUALS'", id="env-without-equals"),
    pytest.param(["-c", "1", "--env", b"A=\xff"], "env.A: ", id="env-not-utf8"),
    pytest.param(["--argv", b"ls\xff"], "argv[0]: ", id="argv-not-utf8"),
    pytest.param(["-c", b"print('\xff')"], "code: ", id="code-not-utf8"),
    pytest.param(["-c", "1", "--env", "BIG=" + "x" * (16 * KiB + 1)], "env.BIG: ",
                 id="env-value-over-its-cap"),
    pytest.param(["--argv", "echo", "--argv", "x" * 100 * KiB, "--argv", "x" * 100 * KiB],
                 "argv: ", id="argv-over-its-cap"),
    pytest.param(["-c", "1", "--argv", "ls"], "argv: ", id="code-and-argv"),
    pytest.param(["--argv", ""], "argv[0]: ", id="empty-argv0"),
    pytest.param(["-c", "1", "--key", "k" * 201], "idempotency_key: ", id="key-too-long"),
    pytest.param(["-c", "1", "--image", "\x1b]0;pwned\x07"], "profile: ", id="escapes-in-profile"),
    pytest.param(["-c", "1", "--bogus"], "--bogus", id="unknown-option"),
]


def assert_refused_in_one_line(done: subprocess.CompletedProcess[bytes], says: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == b""
    line = done.stderr.decode("utf-8")
    assert line.startswith("airlock: ") and line.endswith("\n") and line.count("\n") == 1, line
    assert says in line and line[:-1].isprintable() and len(line) < 500, line


@pytest.mark.parametrize(("args", "says"), CLI_CASES)
def test_the_cli_says_bad_input_in_one_line_exits_2_and_stores_nothing(
        args: list[str | bytes], says: str, settings: Settings, canary: Canary) -> None:
    before = job_count(settings.database_url)
    assert_refused_in_one_line(airlock(settings, "run", *args), says)
    assert job_count(settings.database_url) == before
    canary()


@pytest.mark.parametrize(("content", "says"), [
    pytest.param(b"print(1)\x00", "code: contains a NUL byte", id="nul"),
    pytest.param(b"#" * (257 * KiB), "code: 263168 bytes is over the cap", id="over-the-cap"),
])
def test_a_script_the_contract_refuses_is_one_line_and_exit_2(
        content: bytes, says: str, settings: Settings, canary: Canary, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_bytes(content)
    before = job_count(settings.database_url)
    assert_refused_in_one_line(airlock(settings, "run", str(script)), says)
    assert job_count(settings.database_url) == before
    canary()


# A message's one argument should be a job id; anything else is set aside before any task runs
# (tasks.consumer: kept in the queue's dead-letter list, with the reason).
RAW_MESSAGES = [
    pytest.param([{"code": "1", "limits": {"cpus": NAN}}], "not a job id", id="a-spec-with-nan"),
    pytest.param(["\x00" * 36], "not a job id", id="nul-bytes"),
    pytest.param(["\ud800" * 36], "not a job id", id="lone-surrogates"),
    pytest.param(["x" * 8 * MiB], "not a job id", id="a-huge-string"),
    pytest.param(["not-a-job-id"], "not a job id", id="not-an-id"),
    pytest.param([True], "not a job id", id="a-boolean"),
    pytest.param([12345], "not a job id", id="a-number"),
    pytest.param([None], "not a job id", id="null"),
    pytest.param([["a", "list"]], "not a job id", id="a-list"),
    pytest.param([str(uuid.uuid4())], "'not_claimed'", id="an-id-of-no-job"),
    pytest.param([], "one job id expected, got 0", id="no-argument"),
    pytest.param([str(uuid.uuid4()), "extra"], "one job id expected, got 2", id="two-arguments"),
]


def handled(worker: WorkerProcess, task_id: str, timeout: float = 60.0) -> str:
    """The worker's log line that ends the task: it succeeded (with what) or raised, or its
    message was set aside before any task ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = [line for line in worker.log().splitlines() if task_id in line and (
            "broker.set_aside" in line
            or (f"run_job[{task_id}]" in line and (" succeeded " in line or " raised " in line)))]
        if ended:
            return ended[-1]
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} not handled in {timeout}s:\n{worker.log()[-3000:]}")


@pytest.mark.parametrize(("args", "outcome"), RAW_MESSAGES)
def test_a_raw_broker_message_that_is_no_job_is_set_aside_and_the_worker_serves_on(
        args: list[object], outcome: str, client: Airlock, settings: Settings,
        worker: WorkerProcess, canary: Canary) -> None:
    before = job_count(settings.database_url)
    sent = client.queue.celery.send_task(TASK_NAME, args=args, queue=settings.queue, retry=False)
    line = handled(worker, sent.id)
    client.redis.delete(f"airlock:dead:{settings.queue}")
    assert outcome in line, line
    assert job_count(settings.database_url) == before
    assert worker.proc is not None and worker.proc.poll() is None  # the worker is still up
    canary()
