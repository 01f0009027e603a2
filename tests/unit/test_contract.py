"""The strict job contract (issue 15, ATTACKS.md A38): each class of bad input is refused with
a JobSpecError naming the field, in one short printable line; pure, no services."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from base.errors import JobSpecError, preview
from config.settings import Settings
from tasks.contract import JobSpec, resolve

KiB, MiB = 1024, 1024**2
S = Settings()
NAN, INF = math.nan, math.inf


def refused(spec: object, s: Settings = S) -> JobSpecError:
    with pytest.raises(JobSpecError) as info:
        resolve(spec, s)
    return info.value


def job(**fields: Any) -> dict[str, Any]:
    return {"code": "print(1)", **fields}


def argv_job(*argv: str, **fields: Any) -> dict[str, Any]:
    return {"argv": list(argv), **fields}


NON_FINITE = [
    (job(limits={"cpus": NAN}), "limits.cpus"),
    (job(limits={"timeout_s": INF}), "limits.timeout_s"),
    (job(limits={"timeout_s": -INF}), "limits.timeout_s"),
    (job(limits={"memory_bytes": NAN}), "limits.memory_bytes"),
    (json.loads('{"code": "1", "limits": {"cpus": NaN}}'), "limits.cpus"),
    (json.loads('{"code": "1", "limits": {"timeout_s": Infinity}}'), "limits.timeout_s"),
]
NOT_NUMBERS = [
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
NUL = [(make("\x00"), field.format(v="\\x00")) for make, field in TEXT_FIELDS] + [
    (job(stdin_b64="AA==\x00"), "stdin_b64"),
]
SURROGATES = [(make("\ud800"), field.format(v="\\ud800")) for make, field in TEXT_FIELDS] + [
    (job(stdin="\udcff"), "stdin"),  # alone, and the low half
    (json.loads('{"code": "1", "env": {"X": "\\ud800"}}'), "env.X"),
]
OVER_A_CAP = [
    (job(env={"BIG": "x" * (16 * KiB + 1)}), "env.BIG"),
    (job(env={"BIG": "é" * (8 * KiB + 1)}), "env.BIG"),  # bytes, not characters
    (job(env={"BIG": "x" * 64 * MiB}), "env.BIG"),
    (argv_job("echo", "x" * 128 * KiB), "argv"),
    (argv_job("echo", *["x" * 1000] * 200), "argv"),
    (job(env={f"V{i}": "x" for i in range(65)}), "env"),
    ({"code": "x" * (257 * KiB)}, "code"),
    (job(stdin="x" * (4 * MiB + 1)), "stdin"),
    (job(files={"a": "x" * (3 * MiB), "b": "x" * (1 * MiB + 1)}), "files"),
    (job(files={f"f{i}": "" for i in range(101)}), "files"),
    (job(files={f"f{i}": "" for i in range(60)}, files_b64={f"g{i}": "" for i in range(41)}), "files"),
    # each part under its cap, the whole over 16 MiB: escaped control bytes grow sixfold in JSON
    (job(stdin="\x01" * (3 * MiB), files={"a": "\x01" * (3 * MiB)}), "job"),
]
CONFLICTS = [
    ({"code": "print(1)", "argv": ["python3", "-c", "1"]}, "argv"),
    ({"code": "print(1)", "argv": []}, "argv"),
    ({}, "code"),
    ({"argv": []}, "argv"),
    ({"argv": [""]}, "argv[0]"),
    ({"argv": ["", "x"]}, "argv[0]"),
    (job(stdin="a", stdin_b64="YQ=="), "stdin"),
]
COLLIDING_PATHS = [
    (job(files={"a": "1", "a/b": "2"}), "files.a/b"),
    (job(files={"a/b/c": "1", "a/b": "2"}), "files.a/b/c"),
    (job(files={"main.py": "print(2)"}), "files.main.py"),  # the python profile's code file
    (job(files={"main.py/x": "1"}), "files.main.py/x"),
    (job(profile="node", files={"main.js": "1"}), "files.main.js"),
    (job(files={"a": "1"}, files_b64={"a": "MQ=="}), "files_b64.a"),
    (job(files={"a/b": "1"}, files_b64={"a": "MQ=="}), "files.a/b"),
]
BAD_PATHS = [
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
OTHER = [
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


@pytest.mark.parametrize(("spec", "field"), NON_FINITE + NOT_NUMBERS + NUL + SURROGATES + OVER_A_CAP
                         + CONFLICTS + COLLIDING_PATHS + BAD_PATHS + OTHER)
def test_bad_input_is_refused_naming_the_field_in_one_short_printable_line(
        spec: object, field: str) -> None:
    error = refused(spec)
    assert error.field == field, str(error)
    text = str(error)
    assert text.startswith(f"{field}: ") and len(text) < 420
    assert text.isprintable(), text  # no newline, escape, NUL or lone surrogate


@pytest.mark.parametrize(("spec", "says"), [
    (NON_FINITE[0][0], "finite number"),
    (NOT_NUMBERS[0][0], "not a boolean"),
    (NOT_NUMBERS[3][0], "not a string"),
    (NUL[0][0], "NUL byte"),
    (SURROGATES[0][0], "not valid Unicode"),
    (OVER_A_CAP[0][0], "16385 bytes is over the cap of 16384"),
    (CONFLICTS[0][0], "give code or argv, not both"),
    (CONFLICTS[2][0], "nothing to run"),
    (CONFLICTS[3][0], "nothing to run"),
    (CONFLICTS[4][0], "is empty"),
    (COLLIDING_PATHS[0][0], "needs a folder where files.a is a file"),
    (COLLIDING_PATHS[2][0], "same path as code"),
    (COLLIDING_PATHS[5][0], "same path as files.a"),
])
def test_a_refusal_says_what_is_wrong(spec: object, says: str) -> None:
    assert says in str(refused(spec))


def test_a_refusal_never_echoes_a_huge_value_or_raw_control_bytes() -> None:
    secret_blob = "\x1b[8m" + "A" * MiB
    for spec in (job(profile=secret_blob), job(files={secret_blob[:300]: "x"}),
                 job(env={secret_blob[:100]: "x"}), argv_job(secret_blob)):
        text = str(refused(spec))
        assert "\x1b" not in text and "A" * 100 not in text, text


def test_caps_come_from_the_settings_by_their_flat_names() -> None:
    s = Settings(max_env_value_bytes=4, max_argv_bytes=10, max_spec_bytes=300)
    assert (s.caps.env_value_bytes, s.caps.argv_bytes, s.caps.spec_bytes) == (4, 10, 300)
    resolve(job(env={"A": "1234"}), s)
    assert refused(job(env={"A": "12345"}), s).field == "env.A"
    resolve(argv_job("echo", "1234"), s)  # 5 + 5 bytes with their NULs
    assert refused(argv_job("echo", "12345"), s).field == "argv"
    assert refused(job(label="x" * 200, idempotency_key="k" * 200), s).field == "job"


def test_what_is_fine_stays_fine() -> None:
    _, done = resolve(job(limits={"timeout_s": 5, "cpus": 1}), S)  # ints where floats are meant
    assert (done.limits.timeout_s, done.limits.cpus) == (5.0, 1.0)
    _, done = resolve(argv_job("echo", "", "x"), S)  # an empty argument (not the program)
    assert done.argv == ("echo", "", "x")
    _, done = resolve(job(files={"a/b": "1", "a/c": "2", "ab": "3"}, env={"E": ""}), S)
    assert set(done.files) == {"main.py", "a/b", "a/c", "ab"} and done.env == {"E": ""}
    resolve(job(env={"BIG": "x" * 16 * KiB}), S)  # at the cap exactly
    resolve({"code": "x" * 256 * KiB, "stdin": "x" * 4 * MiB, "files": {"a": "x" * 4 * MiB}}, S)


def test_binary_files_and_stdin_go_in_base64_and_may_hold_nul() -> None:
    blob = bytes(range(256)) * 4
    spec, done = resolve(job(files_b64={"bin/data": base64.b64encode(blob).decode()},
                             files={"t.txt": "text"}, stdin_b64=base64.b64encode(b"\x00\xff").decode()),
                         S)
    assert done.files["bin/data"] == blob and done.files["t.txt"] == b"text"
    assert done.stdin == b"\x00\xff"
    stored = spec.model_dump(mode="json", exclude_none=True)
    assert "\x00" not in json.dumps(stored)  # as PostgreSQL keeps it
    _, again = resolve(stored, S)  # the worker resolves the stored spec: the same job
    assert again == done


def test_a_job_spec_made_without_validation_is_validated_again() -> None:
    sneaky = JobSpec.model_construct(code="print(1)\x00")
    assert refused(sneaky).field == "code"


HOSTILE: list[object] = [None, True, 0, -1, 1.5, NAN, INF, 10**30, "", "x\x00", "\ud800", "5",
                         "x" * 300, [], [""], ["\x00"], {}, {"": ""}, {"\ud800": 1}, {"a": None}]


@pytest.mark.parametrize("name", [*sorted(JobSpec.model_fields), "limits.timeout_s", "limits.cpus",
                                  "limits.memory_bytes", "limits.pids"])
def test_any_value_in_any_field_resolves_or_is_a_job_spec_error(name: str) -> None:
    for value in HOSTILE:
        spec: dict[str, Any] = {"code": "1"} if name != "code" else {}
        if name.startswith("limits."):
            spec["limits"] = {name.split(".")[1]: value}
        else:
            spec[name] = value
        try:
            resolve(spec, S)
        except JobSpecError as exc:
            assert str(exc).isprintable() and len(str(exc)) < 420


def test_the_schema_declares_the_contract() -> None:
    """An HTTP API generates its schema from JobSpec: the strictness shows there."""
    schema = JobSpec.model_json_schema()
    limits = schema["$defs"]["JobLimits"]["properties"]
    cpus = limits["cpus"]["anyOf"][0]
    assert cpus["type"] == "number" and cpus["exclusiveMinimum"] == 0
    assert limits["pids"]["anyOf"][0]["type"] == "integer"
    props = schema["properties"]
    assert props["code"]["anyOf"][0]["pattern"] == "^[^\\x00]*$"
    assert props["argv"]["anyOf"][0]["items"]["pattern"] == "^[^\\x00]*$"
    assert list(props["env"]["patternProperties"]) == ["^[A-Za-z_][A-Za-z0-9_]{0,127}$"]
    assert props["files_b64"]["maxProperties"] == 100
    assert schema["additionalProperties"] is False


def test_preview_keeps_one_short_printable_line() -> None:
    assert preview("a\x00b\nc\x1b[1m\ud800") == "a\\x00b\\nc\\x1b[1m\\ud800"
    assert preview("x" * 100, 10) == "x" * 10 + "…"
    assert preview("é ok") == "é ok"
