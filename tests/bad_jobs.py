"""Bad jobs, one table per class of bad input the contract refuses (issue 15, ATTACKS.md
A38), each as (spec, the field its JobSpecError names); for the unit tests of the contract and
the end-to-end ones (client, CLI), which share them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

KiB, MiB = 1024, 1024**2
NAN, INF = math.nan, math.inf
Case = tuple[object, str]


def job(**fields: Any) -> dict[str, Any]:
    return {"code": "print(1)", **fields}


def argv_job(*argv: str, **fields: Any) -> dict[str, Any]:
    return {"argv": list(argv), **fields}


NON_FINITE: list[Case] = [
    (job(limits={"cpus": NAN}), "limits.cpus"),
    (job(limits={"timeout_s": INF}), "limits.timeout_s"),
    (job(limits={"timeout_s": -INF}), "limits.timeout_s"),
    (job(limits={"memory_bytes": NAN}), "limits.memory_bytes"),
    (json.loads('{"code": "1", "limits": {"cpus": NaN}}'), "limits.cpus"),
    (json.loads('{"code": "1", "limits": {"timeout_s": Infinity}}'), "limits.timeout_s"),
]
NOT_NUMBERS: list[Case] = [
    (job(limits={"cpus": True}), "limits.cpus"),
    (job(limits={"cpus": False}), "limits.cpus"),
    (job(limits={"pids": True}), "limits.pids"),
    (job(limits={"timeout_s": "5"}), "limits.timeout_s"),
    (job(limits={"memory_bytes": "1g"}), "limits.memory_bytes"),
    (job(limits={"output_bytes": "1024"}), "limits.output_bytes"),
    (job(limits={"pids": 64.5}), "limits.pids"),
    (job(limits={"disk_bytes": [1]}), "limits.disk_bytes"),
    (job(limits={"memory_bytes": 10**5000}), "limits.memory_bytes"),  # digits never printed
    (job(limits=5), "limits"),
]
# Every text field, given text PostgreSQL cannot hold: a NUL byte, then a lone surrogate (as
# JSON's "\ud800" decodes). {v} is the bad text, when the field's name is made of it.
TEXT_FIELDS: list[tuple[Callable[[str], object], str]] = [
    (lambda v: {"code": f"print(1){v}"}, "code"),
    (lambda v: job(stdin=f"a{v}"), "stdin"),
    (lambda v: job(files={"data.txt": f"a{v}"}), "files.data.txt"),
    (lambda v: job(files={f"a{v}": "x"}), "files.a{v}"),
    (lambda v: job(files_b64={f"a{v}": "eA=="}), "files_b64.a{v}"),
    (lambda v: job(env={"A": f"a{v}"}), "env.A"),
    (lambda v: job(env={f"A{v}": "x"}), "env.A{v}"),
    (lambda v: argv_job("echo", f"a{v}"), "argv[1]"),
    (lambda v: argv_job(v), "argv[0]"),
    (lambda v: job(label=f"l{v}"), "label"),
    (lambda v: job(idempotency_key=f"k{v}"), "idempotency_key"),
    (lambda v: job(profile=f"python{v}"), "profile"),
]
NUL: list[Case] = [(make("\x00"), field.format(v="\\x00")) for make, field in TEXT_FIELDS] + [
    (job(stdin_b64="AA==\x00"), "stdin_b64"),
]
SURROGATES: list[Case] = [(make("\ud800"), field.format(v="\\ud800")) for make, field in TEXT_FIELDS] + [
    (job(stdin="\udcff"), "stdin"),  # alone, and the low half
    (json.loads('{"code": "1", "env": {"X": "\\ud800"}}'), "env.X"),
]
OVER_A_CAP: list[Case] = [
    (job(env={"BIG": "x" * (16 * KiB + 1)}), "env.BIG"),
    (job(env={"BIG": "é" * (8 * KiB + 1)}), "env.BIG"),  # bytes, not characters
    (job(env={"BIG": "x" * 64 * MiB}), "env.BIG"),
    (argv_job("echo", "x" * 128 * KiB), "argv"),
    (argv_job("echo", *["x" * 1000] * 200), "argv"),
    (job(env={f"V{i}": "x" for i in range(65)}), "env"),
    ({"code": "x" * (257 * KiB)}, "code"),
    (job(stdin="x" * (4 * MiB + 1)), "stdin"),
    (job(files={"a": "x" * (3 * MiB), "b": "x" * (1 * MiB + 1)}), "files"),
    (job(files={f"f{i}": "" for i in range(1001)}), "files"),
    (job(files={f"f{i}": "" for i in range(600)}, files_b64={f"g{i}": "" for i in range(401)}), "files"),
    # each part under its cap, the whole over 16 MiB: escaped control bytes grow sixfold in JSON
    (job(stdin="\x01" * (3 * MiB), files={"a": "\x01" * (3 * MiB)}), "job"),
]
CONFLICTS: list[Case] = [
    ({"code": "print(1)", "argv": ["python3", "-c", "1"]}, "argv"),
    ({"code": "print(1)", "argv": []}, "argv"),
    ({}, "code"),
    ({"argv": []}, "argv"),
    ({"argv": [""]}, "argv[0]"),
    ({"argv": ["", "x"]}, "argv[0]"),
    (job(stdin="a", stdin_b64="YQ=="), "stdin"),
]
COLLIDING_PATHS: list[Case] = [
    (job(files={"a": "1", "a/b": "2"}), "files.a/b"),
    (job(files={"a/b/c": "1", "a/b": "2"}), "files.a/b/c"),
    (job(files={"main.py": "print(2)"}), "files.main.py"),  # the python profile's code file
    (job(files={"main.py/x": "1"}), "files.main.py/x"),
    (job(profile="node", files={"main.js": "1"}), "files.main.js"),
    (job(files={"a": "1"}, files_b64={"a": "MQ=="}), "files_b64.a"),
    (job(files={"a/b": "1"}, files_b64={"a": "MQ=="}), "files.a/b"),
]
BAD_PATHS: list[Case] = [
    (job(files={"../etc/passwd": "x"}), "files.../etc/passwd"),
    (job(files={"/etc/passwd": "x"}), "files./etc/passwd"),
    (job(files={"a//b": "x"}), "files.a//b"),
    (job(files={"a/./b": "x"}), "files.a/./b"),
    (job(files={"a/": "x"}), "files.a/"),
    (job(files={"": "x"}), "files."),
    (job(files={"é" * 128: "x"}), "files." + "é" * 94 + "…"),  # 256 bytes in one part
    (job(files={"x" * 256: "x"}), "files." + "x" * 94 + "…"),
    (job(files_b64={"f": "not base64!"}), "files_b64.f"),
    (job(files_b64={"f": "YQ"}), "files_b64.f"),  # unpadded
]
OTHER: list[Case] = [
    ([], "job"),
    ("print(1)", "job"),
    (None, "job"),
    (job(cwd="/"), "cwd"),
    (job(env={"A\n": "x"}), "env.A\\n"),
    (job(env={"AIRLOCK_X": "x"}), "env.AIRLOCK_X"),
    (job(env=["A=1"]), "env"),
    (job(argv="echo hi"), "argv"),
    (job(network=True), "network"),
    (job(profile="evil" * 1000), "profile"),
    (job(label="x" * 201), "label"),
]

CLASSES: dict[str, list[Case]] = {
    "non-finite numbers": NON_FINITE, "booleans and strings for numbers": NOT_NUMBERS,
    "NUL bytes": NUL, "invalid Unicode": SURROGATES, "over a cap": OVER_A_CAP,
    "code and argv": CONFLICTS, "colliding paths": COLLIDING_PATHS, "bad paths": BAD_PATHS,
    "other": OTHER,
}
