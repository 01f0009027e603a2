"""Airlock's seccomp profile against the real engine, through the Docker SDK directly.

Each test runs one fresh container of the job image with the full hardening and
Airlock's profile as the worker hands it to the engine (A1, A2, A4 of ATTACKS.md), then
removes it. Files a job needs
are written into /workspace by a small bootstrap, so no host path is mounted.
The probes are plain scripts under probes/ so the job-API tests can reuse them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests
from docker.models.containers import Container

from config.seccomp import for_engine, load_profile
from config.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.attacks]

IMAGE = "airlock/sandbox:latest"
HERE = Path(__file__).parent
PROBES = HERE / "probes"
LABEL = {"org.airlock.test": "seccomp-raw"}
SIGSYS = 31
CAPS_CHOWN_SETUID_SETGID = 0xC1
# A uid of the jobs' range (config/sections.py), as a job would run: never a host account's.
UID = Settings().sandbox.job_uids[0] + Settings().sandbox.job_uids[1] - 1
USER = f"{UID}:{UID}"
BOOTSTRAP = """
import json, os, sys
for name, text in json.loads(sys.argv[1]).items():
    path = os.path.join("/workspace", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
os.execvp("sh", ["sh", "-c", sys.argv[2]])
"""


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> Run:
        assert self.exit_code == 0, f"exit {self.exit_code}\n{self.stdout}\n{self.stderr}"
        return self


def hardened(user: str) -> dict[str, object]:
    writable = f"size=512m,exec,nosuid,nodev,uid={UID},gid={UID},mode=0755"
    return {
        "read_only": True,
        "tmpfs": {
            "/tmp": "size=1g,noexec,nosuid,nodev",
            "/workspace": writable,
            "/home/appuser": writable,
            "/opt/venv": writable,
        },
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "SETUID", "SETGID"],
        "security_opt": ["no-new-privileges:true", "seccomp=" + for_engine(load_profile())],
        "user": user,
        "network_mode": "none",
        "pids_limit": 256,
        "mem_limit": "1g",
        "memswap_limit": "1g",  # no swap: memswap equals memory
        "init": True,
        "labels": LABEL,
    }


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()
    client.images.get(IMAGE)  # built by scripts/build-images.sh; fail, never skip
    yield client
    leftovers = client.containers.list(all=True, filters={"label": "org.airlock.test=seccomp-raw"})
    client.close()
    assert not leftovers, f"containers left behind: {[c.id for c in leftovers]}"


def run_job(
    client: docker.DockerClient,
    script: str,
    files: dict[str, str] | None = None,
    user: str = USER,
    timeout: float = 240,
) -> Run:
    """Run `sh -c script` in a fresh hardened container after writing files into /workspace."""
    command = ["python3", "-c", BOOTSTRAP, json.dumps(files or {}), script]
    start = time.monotonic()
    container: Container = client.containers.create(IMAGE, command, **hardened(user))
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        # docker-py#1966: a wait timeout can surface as a connection error
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            pytest.fail(f"job did not finish within {timeout} s: {exc}")
        return Run(
            exit_code=status["StatusCode"],
            stdout=container.logs(stdout=True, stderr=False).decode(errors="replace"),
            stderr=container.logs(stdout=False, stderr=True).decode(errors="replace"),
            seconds=time.monotonic() - start,
        )
    finally:
        container.remove(force=True)


# --- (a) denied syscalls: the golden table ------------------------------------------------


def test_denied_syscalls_return_the_golden_errnos(client: docker.DockerClient) -> None:
    golden = json.loads((HERE / "golden_errnos.json").read_text())
    probe = (PROBES / "syscall_probe.py").read_text()

    run = run_job(client, "python3 /workspace/syscall_probe.py", {"syscall_probe.py": probe})

    got = json.loads(run.check().stdout)
    diff = {k: {"got": got.get(k), "golden": golden.get(k)} for k in golden.keys() | got.keys()}
    assert got == golden, {k: v for k, v in diff.items() if v["got"] != v["golden"]}


# --- (b) foreign ABIs -----------------------------------------------------------------------


def test_foreign_abi_syscalls_are_refused(client: docker.DockerClient) -> None:
    source = (PROBES / "foreign_abi.c").read_text()
    script = "cd /workspace && gcc -O2 -o foreign_abi foreign_abi.c && ./foreign_abi"

    result = json.loads(run_job(client, script, {"foreign_abi.c": source}).check().stdout)

    assert result["native_getpid"]["result"] == "returned"
    assert result["native_getpid"]["value"] > 0
    # i386 (int $0x80) and x32 are not in the profile's architectures: libseccomp's
    # bad-arch action kills the calling thread with SIGSYS before any syscall runs
    for name in ("int80_getpid", "int80_unshare_newuser", "x32_getpid"):
        assert result[name] == {"result": "killed", "signal": SIGSYS, "signal_name": "SYS"}, name


# --- (c) ordinary programs still work -------------------------------------------------------

PYTHON_FEATURES = """
import asyncio, multiprocessing as mp, sqlite3, ssl, subprocess, sys, threading

def square(x):
    return x * x

async def echo_once():
    async def handle(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\\n")
    line = await reader.readline()
    writer.close()
    server.close()
    proc = await asyncio.create_subprocess_exec("echo", "sub", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    total = await asyncio.get_running_loop().run_in_executor(None, sum, range(10))
    return line.strip().decode(), out.strip().decode(), total

if __name__ == "__main__":
    seen = []
    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert sorted(seen) == list(range(16))
    assert subprocess.run([sys.executable, "-c", "print(7)"], capture_output=True,
                          text=True, check=True).stdout == "7\\n"
    for method in ("fork", "spawn", "forkserver"):
        with mp.get_context(method).Pool(2) as pool:
            assert pool.map(square, range(8)) == [x * x for x in range(8)], method
    queue, lock = mp.Queue(), mp.Lock()
    with lock:
        queue.put("q")
    assert queue.get(timeout=5) == "q"
    assert asyncio.run(echo_once()) == ("ping", "sub", 45)
    db = sqlite3.connect("/tmp/t.db")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t (x)")
    db.executemany("insert into t values (?)", [(i,) for i in range(100)])
    db.commit()
    assert db.execute("select sum(x) from t").fetchone() == (4950,)
    ctx = ssl.create_default_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and len(ssl.RAND_bytes(16)) == 16
    print("PY-OK")
"""


def test_python_threads_subprocess_multiprocessing_asyncio_sqlite_ssl(
    client: docker.DockerClient,
) -> None:
    run = run_job(client, "python3 /workspace/features.py", {"features.py": PYTHON_FEATURES})
    assert run.check().stdout.strip() == "PY-OK"


# A PEP 517 backend in the standard library only, so an sdist builds with no network.
BACKEND = """
import base64, hashlib, os, zipfile

def write_wheel(directory, name, version, files):
    info = f"{name}-{version}.dist-info"
    files = dict(files)
    metadata = f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n"
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\\n".join(lines + [f"{info}/RECORD,,"]) + "\\n").encode()
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, wheel), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "airlock_probe_src", "__init__.py"), "rb") as f:
        source = f.read()
    return write_wheel(wheel_directory, "airlock_probe_src", "0.1",
                       {"airlock_probe_src/__init__.py": source})
"""
PYPROJECT = """
[build-system]
requires = []
build-backend = "airlock_backend"
backend-path = ["."]

[project]
name = "airlock_probe_src"
version = "0.1"
"""
VENV_AND_PIP = r"""
set -eu
python3 -m venv /opt/venv/x
/opt/venv/x/bin/pip --version
cd /workspace && mkdir dist
python3 -c 'import sys; sys.path.insert(0, "src"); import airlock_backend as b
b.write_wheel("dist", "airlock_probe_wheel", "0.1", {"airlock_probe_wheel/__init__.py": b"X = 40"})'
tar -czf dist/airlock_probe_src-0.1.tar.gz --transform 's,^src,airlock_probe_src-0.1,' src
/opt/venv/x/bin/pip install --no-index dist/airlock_probe_wheel-0.1-py3-none-any.whl
/opt/venv/x/bin/pip install --no-index dist/airlock_probe_src-0.1.tar.gz
/opt/venv/x/bin/python -c 'import airlock_probe_wheel as w, airlock_probe_src as s
print("PIP-OK", w.X + s.Y)'
"""


def test_venv_pip_and_offline_installs_of_a_wheel_and_an_sdist(client: docker.DockerClient) -> None:
    files = {
        "src/pyproject.toml": PYPROJECT,
        "src/airlock_backend.py": BACKEND,
        "src/airlock_probe_src/__init__.py": "Y = 2\n",
    }

    run = run_job(client, VENV_AND_PIP, files).check()

    assert run.stdout.startswith("pip ") and "/opt/venv/x/" in run.stdout
    installed = run.stdout.replace("_", "-")  # pip prints the name as the metadata spells it
    assert "Successfully installed airlock-probe-wheel-0.1" in installed
    assert "Successfully installed airlock-probe-src-0.1" in installed
    assert "Building wheel for airlock-probe-src" in installed  # the sdist went through PEP 517
    assert run.stdout.strip().endswith("PIP-OK 42")


SHELL = r"""
set -eu
test "$(seq 1 1000 | sort -rn | head -3 | tr '\n' ' ')" = "1000 999 998 "
test "$(printf 'b\na\nb\n' | sort | uniq -c | awk '{print $1 $2}' | xargs)" = "1a 2b"
test "$(echo hello | gzip | gunzip | sed 's/h/j/')" = "jello"
cd /workspace && mkdir -p d/e && touch d/e/f && cp -a d d2 && mv d2 d3 && ln -s d3 l
test "$(readlink l)" = d3 && test -f l/e/f && rm -rf d d3 l
tar -C /usr/lib/python3.11 -cf - json | tar -tf - | grep -q json/decoder.py
mkfifo /tmp/fifo && (echo via-fifo > /tmp/fifo &) && test "$(cat /tmp/fifo)" = via-fifo
timeout 5 sleep 0.1
test "$(id -u):$(id -g)" = "$JOB_USER" && nproc >/dev/null && df /tmp >/dev/null
date -u +%F >/dev/null && test "$(stat -c %u:%g /workspace)" = "$JOB_USER"
find /usr/share/doc -maxdepth 1 -name 'python3*' | grep -q python3
bash -c 'a=(1 2 3); test ${#a[@]} = 3; diff <(echo x) <(echo x); read -r w < <(echo psub)
         test "$w" = psub; trap "echo trapped" USR1; kill -USR1 $$; sleep 0.1 & wait'
echo SH-OK
"""


def test_shell_pipelines_and_coreutils(client: docker.DockerClient) -> None:
    run = run_job(client, f"JOB_USER={USER}\n" + SHELL).check()
    assert run.stdout.strip().splitlines()[-2:] == ["trapped", "SH-OK"]


C_PROGRAM = r"""
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;

static void *twice(void *arg) { long *v = arg; *v *= 2; return NULL; }

int main(void) {
    pthread_t threads[4];
    long values[4] = {1, 2, 3, 4}, sum = 0;
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, twice, &values[i]);
    for (int i = 0; i < 4; i++) { pthread_join(threads[i], NULL); sum += values[i]; }
    int *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid = fork();
    if (pid == 0) { *shared = 21; _exit(0); }
    int status;
    waitpid(pid, &status, 0);
    char *argv[] = {"true", NULL};
    pid_t spawned;
    if (posix_spawnp(&spawned, "true", NULL, NULL, argv, environ) != 0) return 3;
    waitpid(spawned, &status, 0);
    printf("C-OK %ld %d %d\n", sum, *shared * 2, WEXITSTATUS(status));
    return 0;
}
"""


def test_gcc_compiles_and_runs_pthreads_and_fork(client: docker.DockerClient) -> None:
    script = "cd /workspace && gcc -O2 -Wall -pthread -o prog prog.c && ./prog"
    run = run_job(client, script, {"prog.c": C_PROGRAM}).check()
    assert run.stdout.strip() == "C-OK 20 42 0"


NODE_PROGRAM = r"""
const { Worker } = require('worker_threads');
const cp = require('child_process');
const crypto = require('crypto');
const http = require('http');
const os = require('os');
const zlib = require('zlib');
const w = new Worker("require('worker_threads').parentPort.postMessage(21 * 2)", { eval: true });
w.on('message', (fromWorker) => {
  const sync = cp.execFileSync('sh', ['-c', 'echo child']).toString().trim();
  const child = cp.spawn(process.execPath, ['-e', 'process.stdout.write(String(6 * 7))']);
  let spawned = '';
  child.stdout.on('data', (d) => { spawned += d; });
  child.on('close', () => {
    const server = http.createServer((req, res) => res.end('http'));
    server.listen(0, '127.0.0.1', () => {
      http.get({ host: '127.0.0.1', port: server.address().port }, (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => {
          server.close();
          const zipped = zlib.gunzipSync(zlib.gzipSync('z')).toString();
          const ok = crypto.randomBytes(8).length === 8 && os.cpus().length > 0;
          Object.keys(os.networkInterfaces());
          console.log(`NODE-OK ${fromWorker} ${sync} ${spawned} ${body} ${zipped} ${ok}`);
        });
      });
    });
  });
});
"""


def test_node_worker_thread_and_child_process(client: docker.DockerClient) -> None:
    run = run_job(client, 'node -e "$(cat /workspace/prog.js)"', {"prog.js": NODE_PROGRAM})
    assert run.check().stdout.strip() == "NODE-OK 42 child 42 http z true"


# --- (d) what the job sees in /proc/self/status -------------------------------------------


def proc_status(client: docker.DockerClient, user: str) -> dict[str, str]:
    run = run_job(client, "cat /proc/self/status", user=user).check()
    return dict(line.split(":\t", 1) for line in run.stdout.splitlines() if ":\t" in line)


def test_job_status_shows_seccomp_no_new_privs_and_the_three_capabilities(
    client: docker.DockerClient,
) -> None:
    status = proc_status(client, USER)

    assert status["Seccomp"].strip() == "2"
    assert status["Seccomp_filters"].strip() == "1"
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapBnd"], 16) == CAPS_CHOWN_SETUID_SETGID
    assert int(status["CapAmb"], 16) == 0
    assert int(status["CapInh"], 16) == 0
    # A non-root process holds none of them: runc sets no ambient capabilities, so
    # the execve of the job's command clears the permitted and effective sets.
    assert int(status["CapPrm"], 16) == 0
    assert int(status["CapEff"], 16) == 0


def test_a_root_process_in_the_job_holds_exactly_the_three_capabilities(
    client: docker.DockerClient,
) -> None:
    status = proc_status(client, "0:0")

    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[key], 16) == CAPS_CHOWN_SETUID_SETGID, key
    assert int(status["CapAmb"], 16) == 0
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
